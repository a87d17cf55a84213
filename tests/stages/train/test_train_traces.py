"""Reasoning traces in the student's training text: the pre-flight renders real rows with the
student's chat template and refuses one that drops, repeats, reorders or does not train the
trace. Real templates: the tiny student's own and those TRL ships (the models' originals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from stages.train.preflight import (
    IGNORE,
    TrainError,
    load_rows,
    load_tokenizer,
    preflight,
    tokenize_row,
)
from stages.train.traces import in_form, trace_form, trace_problem

TRACE = "\nTom has 3 apples and buys 4 more, so 3 + 4 = 7.\n"


def trl_template(name: str) -> Path:
    import trl

    return Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja"


def kept_with_traces(dir_: Path, n: int = 4) -> Path:
    rows = []
    for i in range(n):
        final = f"\n\nAnswer: {7 + i}"
        trace = TRACE.replace("7", str(7 + i))
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Tom has 3 apples and buys {4 + i} more?"}],
                "completion": [{"role": "assistant", "content": f"<think>{trace}</think>{final}"}],
                "reasoning": trace,
                "final": final,
                "answer": str(7 + i),
            }
        )
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dir_ / "kept.jsonl"


def run_preflight(tiny_model: Path, tmp_path: Path, template: Path | None = None):
    overrides = [f"train.student={tiny_model}", "train.max_length=512"]
    if template is not None:
        overrides.append(f"train.chat_template={template}")
    cfg = load_config(None, overrides)
    return preflight(tiny_model, kept_with_traces(tmp_path / "f"), cfg.train, tmp_path)


def trained_text(tok, row: dict) -> str:
    ids = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE]
    return tok.decode(ids)


def test_student_without_think_convention_trains_on_the_trace_in_teacher_tags(tiny_model, tmp_path):
    tok, prepared = run_preflight(tiny_model, tmp_path)
    assert prepared.stats["with_trace"] == 4 and prepared.stats["trace_form"] == "inline"
    text = trained_text(tok, prepared.rows[0])
    assert text.startswith(f"<think>{TRACE}</think>\n\nAnswer: 7")  # then the end of turn


def test_template_with_a_reasoning_field_gets_the_trace_there(tiny_model, tmp_path):
    """Qwen3's template renders `reasoning_content` in its own think block: the trace is
    given in the field (not inline too, which would render it twice) and is trained."""
    tok, prepared = run_preflight(tiny_model, tmp_path, trl_template("qwen3"))
    assert prepared.stats["trace_form"] == "field"
    text = trained_text(tok, prepared.rows[0])
    assert text.count(TRACE.strip()) == 1 and text.index(TRACE.strip()) < text.index("Answer: 7")


def test_template_that_drops_the_trace_is_refused_with_the_remedy(tiny_model, tmp_path):
    """DeepSeek-R1-Distill's template keeps only what follows </think> in assistant turns."""
    with pytest.raises(TrainError) as e:
        run_preflight(tiny_model, tmp_path, trl_template("deepseek_r1_distill"))
    msg = str(e.value)
    assert "drops the reasoning trace" in msg and "train.chat_template" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (  # answer first, then the trace
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' "
            "and '</think>' in m['content'] %}{{ m['content'].split('</think>')[1] }}"
            "{{ m['content'].split('</think>')[0] }}</think>{% else %}{{ m['content'] }}"
            "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
            "<|im_start|>assistant\n{% endif %}",
            "puts the answer before the reasoning trace",
        ),
        (  # the trace twice
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
            "{% if m['role'] == 'assistant' %}{{ m['content'] }}{% endif %}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            "renders the reasoning trace twice",
        ),
    ],
)
def test_templates_that_mangle_the_trace(tiny_model, tmp_path, template, problem):
    path = tmp_path / "t.jinja"
    path.write_text(template)
    with pytest.raises(TrainError, match=problem):
        run_preflight(tiny_model, tmp_path, path)


def trace_check(tiny_model: Path, tmp_path: Path, template: Path) -> str | None:
    """What the trace check says of the first kept row rendered with `template` (the tiny
    tokenizer's EOS is not DeepSeek's, so the whole pre-flight would stop on that)."""
    tok = load_tokenizer(tiny_model, str(template))
    row = in_form(next(load_rows(kept_with_traces(tmp_path / "f"))), trace_form(tok))
    ids, labels, _, _ = tokenize_row(tok, row)
    return trace_problem(tok, row, ids, labels)


def test_training_template_is_the_remedy(tiny_model, tmp_path):
    """TRL's training variant of the DeepSeek-R1-Distill template keeps the trace of the
    assistant turn that the original drops."""
    assert trace_check(tiny_model, tmp_path, trl_template("deepseek_r1_distill")) == (
        "drops the reasoning trace"
    )
    assert trace_check(tiny_model, tmp_path, trl_template("deepseek_r1_distill_training")) is None


def test_template_that_cannot_render_is_one_line(tiny_model, tmp_path):
    """Llama 3's original template needs a bos_token the tiny tokenizer lacks: a message, not a
    Jinja traceback."""
    with pytest.raises(TrainError, match=r"example 0: the student's chat template cannot render"):
        run_preflight(tiny_model, tmp_path, trl_template("llama3"))
