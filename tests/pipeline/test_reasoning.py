"""Reasoning traces: the split of a completion into trace and answer, and what filter and eval
make of it (pipeline/reasoning.py, stages/filter/checks.py, stages/eval/metrics.py)."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.reasoning import Convention, inline_text, split
from stages.eval.metrics import score_rows, summarize
from stages.filter.checks import to_sft_row
from stages.filter.passes import filter_records

TRACE = "\nWe have 3 apples and add 4, so 3 + 4 = 7. The answer: 9 is wrong, 7 is right.\n"


def test_inline_trace_is_split_at_the_close_tag():
    s = split(f"<think>{TRACE}</think>\n\nAnswer: 7", None)
    assert (s.reasoning, s.answer, s.closed, s.source) == (TRACE, "\n\nAnswer: 7", True, "inline")
    assert inline_text(s) == f"<think>{TRACE}</think>\n\nAnswer: 7"  # the teacher's text


def test_trace_opened_in_the_prompt_ends_at_the_close_tag():
    """DeepSeek-R1 distills' template opens <think> in the prompt: the output has only </think>."""
    s = split(f"{TRACE}</think>Answer: 7", None)
    assert (s.reasoning, s.answer, s.closed) == (TRACE, "Answer: 7", True)


def test_unclosed_inline_trace_is_truncated_whatever_finish_reason():
    s = split(f"<think>{TRACE}Answer: 7", None)
    assert s.truncated and s.answer == "" and s.reasoning == TRACE + "Answer: 7"
    assert inline_text(s) == f"<think>{TRACE}Answer: 7"  # rebuilt without a close tag
    assert inline_text(split("", TRACE)) == f"<think>{TRACE}"  # from a parser's field alike


def test_server_field_is_the_trace_and_content_the_answer():
    s = split("\n\nAnswer: 7", TRACE)
    assert (s.reasoning, s.answer, s.closed, s.source) == (TRACE, "\n\nAnswer: 7", True, "field")
    # vLLM's parsers put everything in the field when the close tag never came
    assert split("", TRACE).truncated
    # an empty field is no trace: the content is read as it is
    assert split("Answer: 7", "").reasoning is None


def test_both_capture_paths_give_the_same_parts():
    inline = split(f"<think>{TRACE}</think>\n\nAnswer: 7", None)
    field = split("\n\nAnswer: 7", TRACE)
    assert (inline.reasoning, inline.answer) == (field.reasoning, field.answer)
    assert inline_text(inline) == inline_text(field)


def test_modes_and_custom_tags():
    text = f"<think>{TRACE}</think>Answer: 7"
    off = split(text, None, "off")
    assert off.reasoning is None and off.answer == text
    s = split(f"[[r]]{TRACE}[[/r]]Answer: 7", None, "auto", ("[[r]]", "[[/r]]"))
    assert s.reasoning == TRACE and s.answer == "Answer: 7"
    assert split("Answer: 7", None).reasoning is None  # no trace: a plain answer


@pytest.mark.parametrize(
    "tags", [["<think>"], ["<think>", "<think>"], ["", "</think>"], ["a", "b", "c"]]
)
def test_bad_think_tags_fail_at_config(tags):
    with pytest.raises(ConfigError, match="teacher.think_tags"):
        load_config(None, [f"teacher.think_tags={tags!r}".replace("'", '"')])


def test_yaml_off_is_the_mode_not_false(tmp_path):
    """YAML 1.1 reads a bare `off` as false; the mode is meant."""
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  reasoning: off\n")
    assert load_config(path).teacher.reasoning == "off"


def test_new_reasoning_knobs_leave_default_keys_alone():
    """Knobs added for traces stay out of stage keys at their defaults (cached runs stay
    valid), and change them when set."""
    from pipeline.config import semantic

    cfg = load_config(None, [])
    assert "reasoning" not in semantic(cfg.teacher) and "think_tags" not in semantic(cfg.teacher)
    assert "max_reasoning_words" not in semantic(cfg.filter)
    set_ = load_config(None, ["teacher.reasoning=required", "filter.max_reasoning_words=50"])
    assert semantic(set_.teacher)["reasoning"] == "required"
    assert semantic(set_.filter)["max_reasoning_words"] == 50


# --- filter --------------------------------------------------------------------------------------


def _row(rid: str, completion: str, reasoning: str | None = None, finish: str = "stop") -> dict:
    row = {
        "id": rid,
        "question_id": f"q-{rid}",
        "gold": "7",
        "answer_type": "numeric",
        "completion": completion,
        "finish_reason": finish,
        "usage": {"completion_tokens": 20},
    }
    if reasoning is not None:
        row["reasoning"] = reasoning
    return row


def _filter(rows: list[dict], *overrides: str) -> tuple[dict[str, str], dict[str, dict]]:
    cfg = load_config(None, ["filter.checks=[truncated,format,correct,length]", *overrides])
    kept, rejected, scores = filter_records(rows, cfg.filter, {}, [], Convention.of(cfg.teacher))
    reasons = {r["id"]: r["reason"] for r in rejected} | {r["id"]: "kept" for r in kept}
    return reasons, scores


def test_filter_reads_the_answer_after_the_trace_only():
    """The trace says 'The answer: 9'; only the final content counts."""
    rows = [
        _row("inline", f"<think>{TRACE}</think>\nAnswer: 7"),
        _row("field", "\nAnswer: 7", TRACE),
        _row("wrong-after", f"<think>{TRACE}</think>\nAnswer: 9"),
        _row("answer-only-in-trace", "<think>Answer: 7</think>\nI am done."),
    ]
    reasons, scores = _filter(rows)
    assert reasons == {
        "inline": "kept",
        "field": "kept",
        "wrong-after": "wrong_answer",
        "answer-only-in-trace": "no_answer_line",
    }
    assert scores["inline"]["answer"] == "7"


def test_unclosed_trace_is_truncated_reasoning_even_with_finish_stop():
    rows = [
        _row("open-stop", f"<think>{TRACE}Answer: 7", finish="stop"),
        _row("open-length", f"<think>{TRACE}", finish="length"),
        _row("field-no-answer", "", TRACE, finish="stop"),
        _row("plain-length", "Answer: 7", finish="length"),
    ]
    reasons, _ = _filter(rows)
    assert reasons == {
        "open-stop": "truncated_reasoning",
        "open-length": "truncated_reasoning",
        "field-no-answer": "truncated_reasoning",
        "plain-length": "truncated",
    }


def test_required_rejects_a_sample_without_a_trace():
    rows = [_row("plain", "Answer: 7"), _row("traced", f"<think>{TRACE}</think>Answer: 7")]
    assert _filter(rows)[0] == {"plain": "kept", "traced": "kept"}
    assert _filter(rows, "teacher.reasoning=required")[0] == {
        "plain": "no_reasoning",
        "traced": "kept",
    }
    # off: the think block is part of the answer text; its 'Answer: 9' line is the last one
    off = [_row("t", "<think>Answer: 9</think>\nAnswer: 7"), _row("u", "Answer: 9\n<think>x")]
    assert _filter(off, "teacher.reasoning=off")[0] == {"t": "kept", "u": "wrong_answer"}


def test_length_bounds_on_trace_and_answer_apart():
    long_trace = "word " * 60
    rows = [
        _row("ok", f"<think>{TRACE}</think>Answer: 7"),
        _row("long-trace", f"<think>{long_trace}</think>Answer: 7"),
        _row("short-trace", "<think>7</think>Answer: 7"),
        _row(
            "long-answer",
            f"<think>{TRACE}</think>So, all in all and after much thought, the "
            "total we get here is simply\nAnswer: 7",
        ),
        _row("no-trace", "Answer: 7"),
    ]
    reasons, scores = _filter(
        rows,
        "filter.min_reasoning_words=3",
        "filter.max_reasoning_words=40",
        "filter.max_answer_words=8",
    )
    assert reasons == {
        "ok": "kept",
        "long-trace": "reasoning_too_long",
        "short-trace": "reasoning_too_short",
        "long-answer": "answer_too_long",
        "no-trace": "reasoning_too_short",
    }
    assert scores["ok"]["reasoning_words"] == 19 and scores["ok"]["answer_words"] == 2
    assert "reasoning_words" not in scores["no-trace"]
    # without traces or answer bounds, scores are what they always were
    _, plain = _filter([_row("p", "Answer: 7")])
    assert "answer_words" not in plain["p"] and "reasoning_words" not in plain["p"]


def test_kept_row_carries_trace_inline_and_apart():
    cfg = load_config(None, [])
    from pipeline.tasks import load_task

    q = load_task(cfg.task).train[0]
    row = _row("x", f"\n\nAnswer: {q.answer}\nQuestion: next one?", TRACE)
    row["gold"] = q.answer
    out = to_sft_row(row, q, {}, cfg)
    final = f"\n\nAnswer: {q.answer}"  # what follows the answer line is cut, as without a trace
    assert out["completion"][0]["content"] == f"<think>{TRACE}</think>{final}"
    assert (out["reasoning"], out["final"], out["answer"]) == (TRACE, final, q.answer)
    plain = to_sft_row(_row("y", f"Answer: {q.answer}"), q, {}, cfg)
    assert "reasoning" not in plain and plain["completion"][0]["content"] == f"Answer: {q.answer}"


# --- eval ----------------------------------------------------------------------------------------


def test_eval_scores_the_answer_and_measures_traces():
    rows = [
        {**_row("a", f"<think>{TRACE}</think>\nAnswer: 7"), "model": "student"},
        {**_row("b", f"<think>{TRACE}"), "model": "student", "question_id": "q-a2"},
        {**_row("c", "Answer: 9"), "model": "base", "question_id": "q-a"},
    ]
    score_rows(rows, Convention())
    assert [r["correct"] for r in rows] == [True, False, False]
    m = summarize(rows, reference="base")
    assert m["student"]["trace_rate"] == 1.0 and m["student"]["unclosed_trace_rate"] == 0.5
    assert m["student"]["mean_reasoning_words"] == 21.0  # whitespace words, both traces
    assert m["student"]["mean_answer_words"] == 1.0  # 'Answer: 7' and nothing
    assert "trace_rate" not in m["base"] and "mean_answer_words" not in m["base"]
    assert "answer_words" not in rows[2]  # a model without traces: outputs as before
    from stages.eval.report import trace_lines

    (line,) = trace_lines({"per_model": m, "models": ["base", "student"]})
    assert line.startswith(
        "student: a trace in 100.0% of answers, mean 21.0 words, left open in 50.0%"
    )


def test_trace_budget_is_checked_and_reaches_only_its_model():
    from pipeline.ask import ModelSpec
    from pipeline.tasks import load_task
    from stages.eval.predictions import ModelUnderTest, plan_requests

    with pytest.raises(ConfigError, match="eval.trace_budget: unknown model 'studnet'"):
        load_config(None, ["eval.trace_budget={studnet: 64}"])
    with pytest.raises(ConfigError, match="eval.trace_budget.student: 0 tokens"):
        load_config(None, ["eval.trace_budget={student: 0}"])
    cfg = load_config(None, ["eval.trace_budget={student: 64}", "task.max_eval=3"])
    muts = [ModelUnderTest(ModelSpec(label), f"id-{label}") for label in ("base", "student")]
    plan_requests(cfg, muts, load_task(cfg.task).eval)
    base, student = ([r.sampling for r, _ in m.requests] for m in muts)
    assert all("thinking_token_budget" not in s for s in base)
    assert all(s["thinking_token_budget"] == 64 for s in student)
