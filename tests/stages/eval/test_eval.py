from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import stages.eval as ev
from pipeline.config import ConfigError, load_config
from pipeline.records import (
    read_jsonl,  # splits on \n only: model text may hold U+2028
    read_jsonl_tolerant,
)
from pipeline.stage import RunContext
from stages.eval import metrics as scoring
from stages.eval import report as write_up
from stages.eval.metrics import summarize
from stages.shared.softlabels import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cfg(tmp_path: Path, tiny: Path, *extra: str):
    return load_config(
        None,
        [
            f"teacher.model={tiny}",
            f"train.student={tiny}",
            "task.max_eval=12",
            "task.max_train=8",
            # a partial eval.sampling override replaces the whole section: keep it greedy
            "eval.sampling.temperature=0.0",
            "eval.sampling.max_tokens=16",
            "eval.concurrency=16",
            "eval.serve.startup_timeout_s=300",
            "teacher.serve.startup_timeout_s=300",
            f"runs_dir={tmp_path / 'runs'}",
            f"cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


def _fake_train(tmp_path: Path, tiny: Path, name: str = "train") -> Path:
    d = tmp_path / name
    shutil.copytree(tiny, d / "model")
    return d


# --- fast: no server -------------------------------------------------------------------------------


def test_model_labels_validates():
    cfg = load_config(None, ["eval.models=[base, student, base, student_answer_only]"])
    assert ev.model_labels(cfg) == ["base", "student", "student_answer_only"]
    with pytest.raises(ConfigError, match=r"eval\.models\[0\]: 'tutor' is not one of"):
        load_config(None, ["eval.models=[tutor]"])  # refused when the config is built


def test_key_parts_ignore_runtime_knobs(tmp_path, tiny_model):
    base = ev.key_parts(_cfg(tmp_path, tiny_model))
    same = ev.key_parts(
        _cfg(tmp_path, tiny_model, "eval.concurrency=3", "teacher.serve.replicas=2", "run=other")
    )
    assert base == same
    other = ev.key_parts(_cfg(tmp_path, tiny_model, "eval.sampling.max_tokens=32"))
    assert other != base
    assert set(base.extra) >= {"teacher_identity", "student_template", "task_data"}


def test_score_rows_and_same_answer_use_the_task_checker():
    rows = [
        {"completion": "3 + 4 = 7\nAnswer: 7", "gold": "7", "answer_type": "numeric"},
        {"completion": "Answer: 7.0", "gold": "7", "answer_type": "numeric"},
        {"completion": "I think 8", "gold": "7", "answer_type": "numeric"},
        {"completion": "Answer: B", "gold": "B", "answer_type": "choice", "choices": ["x", "y"]},
    ]
    scoring.score_rows(rows)
    assert [r["correct"] for r in rows] == [True, True, False, True]
    assert [r["formatted"] for r in rows] == [True, True, False, True]
    assert scoring.same_answer(rows[0], rows[1])  # 7 and 7.0 agree
    assert not scoring.same_answer(rows[0], {**rows[2], "pred": None})


def _rows():
    rows = []
    for model, correct in [
        ("teacher", [1, 1, 0, 1]),
        ("base", [0, 0, 0, 1]),
        ("student", [1, 0, 0, 1]),
    ]:
        for i, c in enumerate(correct):
            rows.append(
                {
                    "model": model,
                    "question_id": f"q{i}",
                    "pred": str(i) if c else None,
                    "correct": bool(c),
                    "formatted": bool(c),
                    "completion": f"step {i} Answer: {i}" if c else "no idea",
                    "finish_reason": "stop" if c else "length",
                    "usage": {"completion_tokens": 5 + i},
                }
            )
    return rows


def test_report_and_plot_from_metrics(tmp_path):
    rows = _rows()
    metrics = {
        "task": "arith",
        "questions": 4,
        "models": ["teacher", "base", "student"],
        "skipped": ["student_answer_only"],
        "sampling": {"temperature": 0.0, "max_tokens": 16},
        "per_model": summarize(rows),
        "mcnemar": {"student_vs_base": scoring.paired_mcnemar(rows, "student", "base")},
    }
    md = write_up.render_report(metrics)
    assert "| model | accuracy [95% CI] |" in md
    assert "Held-out questions: 4" in md
    assert "| student | 50.0% [" in md and "(2/4)" in md
    assert "McNemar student vs base" in md and "exact p = 1" in md
    png = tmp_path / "accuracy.png"
    write_up.plot_accuracy(metrics, png)
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*tmp*"))
    # with eval.draft: a second panel, tokens per teacher step by draft length, beside it
    per = {"tokens_per_step": {str(g): 1 + 0.8 * g for g in range(1, 9)}}
    metrics["draft"] = {
        "student": {"greedy": per, "sampled": per},
        "base": {"not_estimated": "its tokenizer is not the teacher's"},
    }
    both = tmp_path / "both.png"
    write_up.plot_accuracy(metrics, both)
    width = lambda f: int.from_bytes(f.read_bytes()[16:20], "big")  # noqa: E731 - IHDR width
    assert width(both) > width(png) + 400


# --- slow: the real vLLM engine over the tiny model ------------------------------------------------------


@pytest.mark.slow
def test_eval_end_to_end_and_resume(tmp_path, tiny_model):
    cfg = _cfg(tmp_path, tiny_model)
    inputs = {"filter": tmp_path / "filter", "train": _fake_train(tmp_path, tiny_model)}
    inputs["filter"].mkdir()
    out = tmp_path / "runs" / "default" / "eval" / "aaaaaaaaaaaa"
    models = ["teacher", "base", "student"]
    n_q = 12
    n = len(models) * n_q

    stats = ev.run(cfg, RunContext.of(inputs, out))
    assert stats["questions"] == n_q and stats["models"] == models
    assert stats["requested"] == n and stats["reused"] == 0

    rows = list(read_jsonl(out / "predictions.jsonl"))
    assert len(rows) == n
    assert len({r["id"] for r in rows}) == n
    assert {r["model"] for r in rows} == set(models)
    for r in rows:
        assert r["id"] == f"{r['model']}:{r['question_id']}"
        assert {"pred", "correct", "formatted", "completion", "finish_reason", "usage"} <= set(r)
        assert r["usage"]["completion_tokens"] <= 16
    teacher_msgs = next(r for r in rows if r["model"] == "teacher")["messages"]
    student_prompt = next(r for r in rows if r["model"] == "student")["messages"][-1]["content"]
    # one worked example as an earlier turn, then the question
    assert [m["role"] for m in teacher_msgs] == ["user", "assistant", "user"]
    assert teacher_msgs[0]["content"].count("Question:") == 1
    assert student_prompt.count("Question:") == 1

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["questions"] == n_q
    assert set(metrics["per_model"]) == set(models)
    for label, m in metrics["per_model"].items():
        assert m["n"] == n_q
        assert 0.0 <= m["ci_low"] <= m["accuracy"] <= m["ci_high"] <= 1.0
        for k in ("format_rate", "truncation_rate", "answered_rate"):
            assert 0.0 <= m[k] <= 1.0
        assert m["mean_completion_tokens"] <= 16
        if label == "teacher":
            assert m["agreement"] is None
        else:
            assert 0.0 <= m["agreement"] <= 1.0 and 0.0 <= m["similarity"] <= 1.0
    assert {"student_vs_base", "student_vs_teacher"} <= set(metrics["mcnemar"])
    assert 0.0 <= metrics["mcnemar"]["student_vs_base"]["p_value"] <= 1.0
    # Same weights, same prompt, greedy: the copied "student" answers exactly like "base".
    assert metrics["mcnemar"]["student_vs_base"]["b01"] == 0
    assert metrics["mcnemar"]["student_vs_base"]["b10"] == 0

    md = (out / "report.md").read_text()
    assert "| model | accuracy [95% CI] |" in md
    assert f"Held-out questions: {n_q}" in md
    for label in models:
        assert f"| {label} |" in md
    assert "McNemar student vs base" in md
    assert (out / "accuracy.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "logs" / "teacher" / "engine.log").is_file()  # serve.engine auto: offline
    # Teacher and base are the same weights served the same way: one engine asked both.
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["student", "teacher"]

    # Rerun: everything is reused, no server starts.
    again = ev.run(cfg, RunContext.of(inputs, out))
    assert again["requested"] == 0 and again["reused"] == n
    assert json.loads((out / "metrics.json").read_text())["per_model"] == metrics["per_model"]

    # Interrupted run: the student's last rows are gone and a torn line is left behind.
    pred = out / "predictions.jsonl"
    keep = [r for r in rows if not (r["model"] == "student" and r["question_id"] in _last(rows))]
    pred.write_text("".join(json.dumps(r) + "\n" for r in keep) + '{"id": "student:x", "comp')
    resumed = ev.run(cfg, RunContext.of(inputs, out))
    assert resumed["torn_lines_dropped"] == 1
    assert resumed["requested"] == 3 and resumed["reused"] == n - 3
    after = read_jsonl_tolerant(pred)
    assert not after.torn and len(after.rows) == n
    assert json.loads((out / "metrics.json").read_text())["per_model"] == metrics["per_model"]

    # Another eval key of the same run reuses identical requests (same weights, prompt, sampling).
    out2 = out.parent / "bbbbbbbbbbbb"
    other = ev.run(cfg, RunContext.of(inputs, out2))
    assert other["requested"] == 0 and other["reused_from_other_keys"] == n

    # Another run dir, the same training: its student differs only in the files that record
    # the run (the Trainer's training_args.bin pickles the run's path; the card) and is the
    # same student, so every answer is reused, none asked.
    moved = _fake_train(tmp_path, tiny_model, "train-elsewhere")
    (moved / "model" / "training_args.bin").write_bytes(b"pickled: /runs/elsewhere/train")
    (moved / "model" / "README.md").write_text("a card with other timings")
    elsewhere = tmp_path / "runs" / "elsewhere" / "eval" / "cccccccccccc"
    far = ev.run(cfg, RunContext.of({**inputs, "train": moved}, elsewhere))
    assert far["requested"] == 0 and far["reused_from_other_keys"] == n
    # Other weights are another student: its answers are asked, the rest reused.
    changed = _fake_train(tmp_path, tiny_model, "train-changed")
    (changed / "model" / "extra.bin").write_bytes(b"another file: other weights")
    third = ev.run(cfg, RunContext.of({**inputs, "train": changed}, elsewhere.parent / ("d" * 12)))
    assert third["requested"] == n_q and third["reused_from_other_keys"] == n - n_q


def _last(rows: list[dict], k: int = 3) -> set[str]:
    return set(sorted({r["question_id"] for r in rows if r["model"] == "student"})[-k:])


@pytest.mark.slow
def test_draft_estimate_end_to_end(tmp_path, tiny_model):
    """eval.draft on real vLLM: the base (the teacher's own weights, scored after the teacher's
    prompt) is always accepted, tokens per step = draft length + 1, and its KL to the teacher
    on the teacher's answers is 0; a student of another vocabulary is not estimated, with why;
    a rerun asks for no score again, nor measures a draft again. With eval.identity every model also answers the bundled
    probes, kept ungraded in predictions.jsonl and judged in the report; with eval.speculative
    vLLM serves the teacher with the base as its draft and its counters are reported."""
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other" / "model", vocab=400, seed=2)
    cfg = _cfg(
        tmp_path,
        tiny_model,
        "eval.draft=true",
        "eval.draft_k=3",
        "eval.draft_questions=8",
        "eval.identity=true",
        "eval.speculative=true",
        "eval.speculative_k=3",
        "eval.speculative_questions=6",
    )
    inputs = {"filter": tmp_path / "filter", "train": other.parent}
    inputs["filter"].mkdir()
    out = tmp_path / "runs" / "default" / "eval" / "bbbbbbbbbbbb"
    ev.run(cfg, RunContext.of(inputs, out))
    draft = json.loads((out / "metrics.json").read_text())["draft"]
    assert set(draft) == {"base", "student"}
    assert draft["student"] == {"not_estimated": "its tokenizer is not the teacher's"}
    base = draft["base"]
    assert base["texts"] == 8 and base["positions"] >= 8 * 8  # eval.draft_questions
    assert base["greedy"]["acceptance"] == 1.0
    assert base["greedy"]["tokens_per_step"] == {str(g): g + 1.0 for g in range(1, 9)}
    assert 0 < base["sampled"]["acceptance"] <= 1 and base["sampled"]["bound"] == "lower"
    kl = base["kl_on_teacher_answers"]  # the teacher's own weights: nothing between them
    assert kl["nats_per_token"] == pytest.approx(0, abs=1e-3) and kl["bound"] == "lower"
    assert kl["texts"] == 8 and kl["positions"] >= 8 * 8
    md = (out / "report.md").read_text()
    assert "base: greedy acceptance 100.0%" in md and "student: not estimated" in md
    assert "KL(teacher || it) on the teacher's answers at least 0.0" in md
    scores = (out / "draft_scores.jsonl").read_text()
    # the teacher and the base each score the base's answers and the teacher's, each once,
    # their numbers in the soft-label store's format, a record each
    assert scores.count("\n") == 4 * 8
    assert len(Store.open(out / "draft_scores.logprobs.bin").index) == 4 * 8
    # eval.identity: every model answered the 16 probes, kept in predictions.jsonl, not graded
    metrics = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    probed = [r for r in preds if r["answer_type"] == "identity"]
    assert len(preds) == 3 * 12 + 3 * 16 and len(probed) == 3 * 16
    assert all(r["messages"][-1]["role"] == "user" and r["completion"] for r in probed)
    assert {m: v["n"] for m, v in metrics["per_model"].items()} == {
        "teacher": 12,
        "base": 12,
        "student": 12,
    }
    ident = metrics["identity"]
    assert set(ident["models"]) == {"teacher", "base", "student"} and ident["probes"] == 16
    assert ident["models"]["student"]["verdict"]  # a verdict or why none, stated
    assert "Identity (the bundled probes" in md
    # eval.speculative: vLLM served the teacher with the base (its own weights) as its draft;
    # its counters say the draft was accepted (nearly) always, 3 tokens a step
    spec = metrics["speculative"]
    assert spec["student"] == {"not_measured": "its tokenizer is not the teacher's"}
    b = spec["base"]
    assert b["questions"] == 6 and b["k"] == 3 and b["drafts"] > 0
    assert b["draft_tokens"] == 3 * b["drafts"] and b["acceptance"] >= 0.9
    assert b["tokens_per_step"] == pytest.approx(1 + b["accepted_tokens"] / b["drafts"], abs=1e-3)
    assert set(b["accepted_by_position"]) == {"1", "2", "3"} and b["same_text_as_alone"] >= 0.8
    assert b["teacher_alone_seconds"] > 0 and b["speedup"] > 0
    assert "base: draft length 3, acceptance" in md and "(estimated: 4.00)" in md
    kept = {p.name: p.read_bytes() for p in (out / "speculative").iterdir()}
    assert set(kept) == {"teacher.json", "base.json"}  # the teacher alone, the base as draft
    ev.run(cfg, RunContext.of(inputs, out))
    assert (out / "draft_scores.jsonl").read_text() == scores
    # the rerun measured nothing again: the same figures, to the hundredth of a second
    assert json.loads((out / "metrics.json").read_text())["speculative"] == spec
    # an interrupted measurement: the draft's is missing; only it is measured again
    (out / "speculative" / "base.json").unlink()
    ev.run(cfg, RunContext.of(inputs, out))
    assert (out / "speculative" / "teacher.json").read_bytes() == kept["teacher.json"]
    assert (out / "speculative" / "base.json").read_bytes() != kept["base.json"]
    again = json.loads((out / "metrics.json").read_text())["speculative"]["base"]
    assert again["teacher_alone_seconds"] == b["teacher_alone_seconds"]


def test_rows_hashed_under_a_students_earlier_identity_still_answer(tmp_path, tiny_model):
    """A trained student's identity no longer covers its run files; the rows an earlier version
    hashed with them are still found, not asked again. Its identity ignores only those files."""
    from pipeline.calls import Request
    from pipeline.models import RUN_FILES, model_identity
    from stages.eval.predictions import ModelUnderTest, answers, request_sha

    model = _fake_train(tmp_path, tiny_model) / "model"
    (model / "training_args.bin").write_bytes(b"pickled: /runs/a/train")
    new, old = model_identity(model, skip=RUN_FILES), model_identity(model)
    assert new != old
    (model / "training_args.bin").write_bytes(b"pickled: /runs/b/train")
    assert model_identity(model, skip=RUN_FILES) == new  # another run's path: the same student
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert model_identity(model, skip=RUN_FILES) != new  # a model file is the model

    req = Request(["student:q1"], [{"role": "user", "content": "1+1?"}], {"max_tokens": 8})
    m = ModelUnderTest(spec=None, identity=new, earlier=(old,))  # type: ignore[arg-type]
    assert answers({"request_sha": request_sha(old, req)}, m, req)
    assert answers({"request_sha": request_sha(new, req)}, m, req)
    assert not answers({"request_sha": request_sha("other weights", req)}, m, req)
