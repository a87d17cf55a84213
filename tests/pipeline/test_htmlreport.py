"""`distill report` (pipeline/htmlreport/): one self-contained HTML file per run.

The run dirs here are built by hand, every file shaped as the real stages write it (copied from
a default run's generate, filter, train and eval dirs), keyed and manifested as the runner would,
so `distill status` (which the report uses) finds them complete. No engine, no training."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

import pipeline.htmlreport.samples as samples_module
from pipeline import cli
from pipeline.cache import write_manifest
from pipeline.config import Config, load_config
from pipeline.htmlreport import SIZE_BOUND_100K, gather, render, report_path
from pipeline.htmlreport.collect import RunData, collect, read_funnel, read_training
from pipeline.htmlreport.embed import script_json, unpack
from pipeline.htmlreport.samples import read_samples
from pipeline.runner import plan

OPEN_100K_S = 20  # seconds: the 100,000-sample report, opened and ready in the browser
EVIL = "</script><script>alert(1)</script><!-- "
PROMPT = 'Solve the problem step by step. Finish with a line of the form "Answer: <number>".'
TEACHERS = ("smollm2-135m", "big<b>teacher")  # the second name is markup: it must be escaped


def _question(qid: str, k: int) -> str:
    return f"{PROMPT}\n\nQuestion: Lily has {k} shells. She finds 3 more. How many ({qid})?"


def generated(qid: str, i: int, teacher: str, text: str, gold: str) -> dict[str, Any]:
    """A row of generate's samples.jsonl."""
    return {
        "id": f"{qid}-{teacher}-{i}",
        "question_id": qid,
        "sample_index": i,
        "teacher": teacher,
        "teacher_identity": f"{teacher}:q4_1-gguf",
        "messages": [{"role": "user", "content": _question(qid, i)}],
        "completion": text,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 167, "completion_tokens": 51},
        "sampling": {"temperature": 0.5, "top_p": 1.0, "max_tokens": 128, "seed": 1},
        "prompt_sha": "0" * 64,
        "gold": gold,
        "answer_type": "numeric",
        "choices": [],
        "endpoint": "offline",
    }


def kept_row(g: dict[str, Any], answer: str) -> dict[str, Any]:
    """A row of filter's kept.jsonl, from the generated sample it keeps."""
    return {
        "prompt": g["messages"],
        "completion": [{"role": "assistant", "content": g["completion"]}],
        "answer": answer,
        "gold": g["gold"],
        "question_id": g["question_id"],
        "sample_id": g["id"],
        "teacher": g["teacher"],
        "scores": {"truncated": False, "format": True, "correct": True, "answer": answer},
        "pass_rate": 0.5,
        "pass_rate_by_teacher": {g["teacher"]: 0.5},
    }


def rejected_row(g: dict[str, Any], reason: str, answer: str) -> dict[str, Any]:
    return g | {"reason": reason, "scores": {"format": True, "correct": False, "answer": answer}}


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_filter(d: Path, kept: list[dict], rejected: list[dict], teachers: dict) -> dict:
    """kept.jsonl, rejected.jsonl and a report.json that counts them as the filter does."""
    d.mkdir(parents=True, exist_ok=True)
    _jsonl(d / "kept.jsonl", kept)
    _jsonl(d / "rejected.jsonl", rejected)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    report = {
        "input": len(kept) + len(rejected),
        "kept": len(kept),
        "rejected": len(rejected),
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "checks": ["truncated", "format", "correct"],
        "truncated_seen": reasons.get("truncated", 0),
        "questions_with_kept": len({r["question_id"] for r in kept}),
        "questions_total": len({r["question_id"] for r in kept + rejected}),
        "splits": {"eval": 6, "train": 10, "validation": 4},
        "teachers": teachers,
        "advice": ["2 of 10 questions were never solved"],
    }
    (d / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def _samples() -> tuple[list[dict], list[dict]]:
    """Ten questions, two teachers, two samples each: kept when right, else a reason."""
    kept, rejected = [], []
    reasons = ("wrong_answer", "truncated", "no_answer_line", "exact_duplicate")
    for q in range(10):
        qid = f"arith-{q:05d}"
        for t, teacher in enumerate(TEACHERS):
            for i in range(2):
                text = f"{q} + 3 = {q + 3}.\nAnswer: {q + 3}" if (q + i + t) % 3 else f"no {q}"
                if q == 7 and i == 0 and t == 0:
                    text = "a teacher wrote " + EVIL + "\nAnswer: 10"
                g = generated(qid, i, teacher, text, str(q + 3))
                if (q + i + t) % 3:
                    kept.append(kept_row(g, str(q + 3)))
                else:
                    rejected.append(rejected_row(g, reasons[(q + t) % 4], str(q)))
    return kept, rejected


def _teachers(kept: list[dict], rejected: list[dict]) -> dict[str, dict[str, int]]:
    out = {}
    for t in TEACHERS:
        k = sum(r["teacher"] == t for r in kept)
        n = k + sum(r["teacher"] == t for r in rejected)
        out[t] = {"samples": n, "verified": k, "kept": k, "questions": 10, "questions_solved": 9}
    return out


def _train(d: Path) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    log = [
        {"step": s, "epoch": s / 8, "loss": 1.0 / s, "learning_rate": 1e-4} for s in (2, 4, 6, 8)
    ]
    log.append({"step": 8, "epoch": 1.0, "validation_accuracy": 0.75})
    _jsonl(d / "train_log.jsonl", log)
    val = [
        {"id": "step-000004", "step": 4, "epoch": 0.5, "accuracy": 0.75, "correct": 3, "n": 4},
        {"id": "step-000008", "step": 8, "epoch": 1.0, "accuracy": 0.5, "correct": 2, "n": 4},
    ]
    _jsonl(d / "validation.jsonl", val)
    stats = {"objective": "sft", "steps": 8, "examples": 26, "tokens": 1234, "select": "best"}
    stats |= {"selected_step": 4, "selected_validation_accuracy": 0.75, "validation": val}
    (d / "train_stats.json").write_text(json.dumps(stats))
    return stats


METRICS = {
    "mcnemar": {
        "student_vs_teacher": {
            "a": "student", "b": "teacher", "b01": 1, "b10": 2, "n": 6, "p_value": 0.25
        }
    },
    "models": ["teacher", "student"],
    "per_model": {
        "teacher": {"accuracy": 0.5, "ci_low": 0.1876, "ci_high": 0.8124, "correct": 3, "n": 6,
                    "format_rate": 1.0, "truncation_rate": 0.0, "mean_completion_tokens": 40.5,
                    "agreement": None, "similarity": None},
        "student": {"accuracy": 2 / 3, "ci_low": 0.3, "ci_high": 0.9032, "correct": 4, "n": 6,
                    "format_rate": 0.8333, "truncation_rate": 0.1667,
                    "mean_completion_tokens": 33.85, "agreement": 0.5, "similarity": 0.67},
    },
    "questions": 6,
    "task": "arith",
}  # fmt: skip


def _eval(d: Path) -> dict[str, Any]:
    """metrics.json and predictions.jsonl: teacher right on e0-e2, student right on e1-e4."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(METRICS, indent=2))
    rows = []
    for model, right in (("teacher", {0, 1, 2}), ("student", {1, 2, 3, 4})):
        for q in range(6):
            qid, ok = f"eval-{q}", q in right
            rows.append(
                {
                    "id": f"{model}:{qid}", "model": model, "question_id": qid,
                    "messages": [{"role": "user", "content": _question(qid, q)}],
                    "completion": f"{model} says {'7' if ok else '9'} " + EVIL,
                    "finish_reason": "stop", "gold": "7", "pred": "7" if ok else "9",
                    "correct": ok, "formatted": True,
                }
            )  # fmt: skip
    _jsonl(d / "predictions.jsonl", rows)
    return {"accuracy": {"teacher": 0.5, "student": 0.6667}, "teacher_spend": {"calls": 6}}


def make_run(tmp_path: Path, upto: str = "eval") -> tuple[Config, dict[str, Any]]:
    """The default config's chain under tmp_path, complete up to `upto`, as the runner leaves
    it (files, then the manifest); returns the config and what was written."""
    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    plans = plan(cfg, "eval")
    kept, rejected = _samples()
    made: dict[str, Any] = {"kept": kept, "rejected": rejected}
    gen_stats = {"samples": 40, "prompt_tokens": 6680, "completion_tokens": 2040, "usd": 0.0123}
    writers = {
        "generate": lambda d: (
            (d.mkdir(parents=True), _jsonl(d / "samples.jsonl", [])) and gen_stats
        ),
        "filter": lambda d: write_filter(d, kept, rejected, _teachers(kept, rejected)),
        "train": _train,
        "eval": _eval,
    }
    for stage in ("generate", "filter", "train", "eval"):
        p = plans[stage]
        made[stage] = writers[stage](p.dir)
        outputs = sorted(f.name for f in p.dir.iterdir())
        write_manifest(
            p.dir, stage=stage, key=p.key, config=p.config, inputs=p.upstream, outputs=outputs,
            stats=made[stage] if stage != "filter" else {"kept": len(kept)}, started=time.time(),
        )  # fmt: skip
        if stage == upto:
            break
    return cfg, made


def payload(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/octet-stream" id="payload">([^<]*)</script>', html)
    assert m, "no payload"
    return unpack(m.group(1))


@pytest.fixture
def full(tmp_path: Path) -> tuple[Config, dict[str, Any], str]:
    cfg, made = make_run(tmp_path)
    return cfg, made, render(gather(cfg))


def test_chain_shows_every_stage_complete_with_its_key_rows_tokens_and_cost(full):
    cfg, made, html = full
    data = gather(cfg)
    assert [s.label for s in data.stages] == ["generate", "filter", "train", "eval"]
    assert all(s.state == "complete" for s in data.stages)
    for s in data.stages:
        assert f"<code>{s.key}</code>" in html
    assert "teacher 6,680 prompt + 2,040 completion" in html and "$0.0123" in html
    assert (
        f"kept {len(made['kept'])}, rejected {len(made['rejected'])}" in html
        and "1,234 in training rows" in html
    )
    assert "splits: " in html and "not run" not in html


def test_funnel_counts_equal_report_json(full, tmp_path):
    cfg, made, html = full
    report = made["filter"]
    funnel = gather(cfg).funnel
    assert funnel is not None
    assert (funnel.input, funnel.kept, funnel.rejected) == (40, 27, 13)
    assert (funnel.input, funnel.kept, funnel.rejected) == (
        report["input"], report["kept"], report["rejected"]
    )  # fmt: skip
    assert funnel.reasons == report["reasons"]
    section = html.split('id="funnel"')[1].split("</section>")[0]
    for reason, n in report["reasons"].items():
        share = f"{100 * n / report['input']:.1f}%"
        assert f"<td>{reason}</td><td class=n>{n:,}</td><td class=n>{share}</td>" in section
    assert f"<td>kept</td><td class=n>{report['kept']}</td>" in section
    # two teachers: a row each, the rejected counted by reason from rejected.jsonl
    by_teacher = {t.name: t for t in funnel.teachers}
    assert set(by_teacher) == set(TEACHERS)
    for t in TEACHERS:
        mine = [r for r in made["rejected"] if r["teacher"] == t]
        assert sum(by_teacher[t].reasons.values()) == len(mine)
    assert "big&lt;b&gt;teacher" in section and "big<b>teacher" not in html


def test_a_searched_question_has_all_its_samples_embedded_with_its_gold(full):
    _, made, html = full
    s = payload(html)["samples"]
    qid = "arith-00004"
    qi = s["qid"].index(qid)
    mine = [i for i, q in enumerate(s["q"]) if q == qi]
    want_kept = [r["completion"][0]["content"] for r in made["kept"] if r["question_id"] == qid]
    want_rej = [r["completion"] for r in made["rejected"] if r["question_id"] == qid]
    assert sorted(s["x"][i] for i in mine) == sorted(want_kept + want_rej)
    assert len(mine) == 4  # two teachers, two samples each
    assert s["gold"][qi] == "7" and "Lily has" in s["qtext"][qi]
    reasons = {s["reasons"][s["r"][i]] for i in mine}
    rejected = {r["reason"] for r in made["rejected"] if r["question_id"] == qid}
    assert reasons == rejected | ({"kept"} if want_kept else set())
    assert s["total"] == len(made["kept"]) + len(made["rejected"]) == len(s["q"])


def test_eval_table_numbers_equal_metrics_json(full):
    _, _, html = full
    section = html.split('id="eval"')[1].split("</section>")[0]
    for name, m in METRICS["per_model"].items():
        row = section.split(f"<td>{name}</td>")[1].split("</tr>")[0]
        assert f"{100 * m['accuracy']:.1f}%" in row
        assert f"[{100 * m['ci_low']:.1f}%, {100 * m['ci_high']:.1f}%]" in row
        assert f"{m['correct']}/{m['n']}" in row
        assert f"{100 * m['format_rate']:.1f}%" in row
    mc = METRICS["mcnemar"]["student_vs_teacher"]
    assert (
        f"<td>student_vs_teacher</td><td class=n>{mc['b10']}</td><td class=n>{mc['b01']}</td>"
        f"<td class=n>{mc['n']}</td><td class=n>0.25</td>"
    ) in section


def test_eval_disagreements_hold_both_answers(full):
    _, _, html = full
    pairs = {(p["right"], p["wrong"]): p for p in payload(html)["eval"]}
    teacher_only = pairs[("teacher", "student")]["rows"]
    student_only = pairs[("student", "teacher")]["rows"]
    assert [r[0] for r in teacher_only] == ["eval-0"]
    assert [r[0] for r in student_only] == ["eval-3", "eval-4"]
    qid, gold, _q, right, right_text, wrong, wrong_text = student_only[0]
    assert (gold, right, wrong) == ("7", "7", "9")
    assert right_text.startswith("student says 7") and wrong_text.startswith("teacher says 9")
    assert "teacher right, student wrong: 1 questions" in html


def test_drafts_and_identity_are_shown_as_eval_wrote_them(tmp_path):
    """What eval measured beyond accuracy (here a draft estimate) comes from its report.md,
    rendered by eval's own render_report: a heading eval renames fails here, not silently."""
    from pipeline.htmlreport.collect import read_eval
    from stages.eval.report import render_report

    d = tmp_path / "eval"
    _eval(d)
    plain = METRICS | {"questions": 6, "sampling": {"temperature": 0.0, "max_tokens": 64}}
    metrics = plain | {"draft": {"student": {"not_estimated": "no <b>scores</b> kept"}}}
    (d / "report.md").write_text(render_report(metrics))
    ev = read_eval(d)
    assert [h.split(" (")[0] for h, _ in ev.extras] == [
        "As a speculative-decoding draft for the teacher"
    ]
    assert ev.extras[0][1] == ["student: not estimated (no <b>scores</b> kept)"]
    html = render(RunData("r", [], {}, eval=ev))
    assert "<li>student: not estimated (no &lt;b&gt;scores&lt;/b&gt; kept)</li>" in html
    (d / "report.md").write_text(render_report(plain))  # a run without them shows none
    assert read_eval(d).extras == []


def test_teacher_text_cannot_break_out_of_the_page(full):
    _, made, html = full
    # the only script elements are the page's own three, each closed once
    assert html.count("<script") == 3 and html.count("</script>") == 3
    assert "alert(1)" not in html  # in the page only inside the compressed payload
    texts = payload(html)["samples"]["x"]
    assert any(EVIL in t for t in texts)  # and it comes back exactly as the teacher wrote it
    for obj in ({"text": EVIL}, [EVIL, "\u2028", "a & b > c"]):
        safe = script_json(obj)
        assert "</" not in safe and "<!--" not in safe and "<" not in safe
        assert json.loads(safe) == obj


def test_training_shows_the_curves_and_the_selected_step(full):
    _, _, html = full
    section = html.split('id="training"')[1].split("</section>")[0]
    assert section.count("<svg") == 2 and "<polyline" in section
    assert "step 4 has the highest validation accuracy of the 2 measured" in section
    assert "validation accuracy 0.750" in section


@pytest.mark.parametrize("upto", ["generate", "filter", "none"])
def test_stages_not_run_are_shown_not_run(tmp_path, upto):
    if upto == "none":
        cfg = load_config(None, [f"runs_dir={tmp_path}"])
    else:
        cfg, _ = make_run(tmp_path, upto)
    html = render(gather(cfg))
    later = {"none": 4, "generate": 3, "filter": 2}[upto]
    chain = html.split('id="chain"')[1].split("</section>")[0]
    assert chain.count("not run (missing)") == later
    for section in ("training", "eval"):
        part = html.split(f'id="{section}"')[1].split("</section>")[0]
        assert "not run:" in part
    if upto == "filter":  # the filter's sections are there, the later ones say not run
        assert "samples in" in html and payload(html)["samples"]["total"] == 40


def test_a_damaged_file_costs_only_its_section(tmp_path):
    cfg, _ = make_run(tmp_path)
    metrics = next((tmp_path / "default" / "eval").glob("*/metrics.json"))
    metrics.write_text("{not json")  # the manifest still says complete (sizes differ: corrupt)
    html = render(gather(cfg))
    assert "Filter funnel" in html and "samples in" in html
    assert "not run" in html.split('id="eval"')[1]


def test_distill_report_writes_the_file_and_run_survives_a_failed_report(
    tmp_path, capsys, monkeypatch
):
    make_run(tmp_path)
    assert cli.main(["report", f"runs_dir={tmp_path}"]) == 0
    path = tmp_path / "default" / "report.html"
    assert path.is_file() and str(path) in capsys.readouterr().out
    assert report_path(load_config(None, [f"runs_dir={tmp_path}"])) == path

    import pipeline.htmlreport as htmlreport
    import pipeline.runner as runner

    def broken(*a: Any, **k: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "run_chain", lambda *a, **k: [])
    monkeypatch.setattr(htmlreport, "write_report", broken)
    assert cli.main(["run", f"runs_dir={tmp_path}"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "report" in line] == [
        "report not written: [Errno 28] No space left on device"
    ]


WORDS = "she he adds takes sells finds gives has had left more total so we then is are".split()
NOUNS = "shells cards apples stamps balloons marbles books coins pens cookies".split()


def synthetic_filter_dir(d: Path, n: int, seed: int = 0) -> None:
    """A filter stage dir of `n` samples (kept.jsonl, rejected.jsonl, report.json), the teacher
    text of the bundled task's kind: word problems worked in ~250 characters, numbers varying,
    4 samples a question, a third kept."""
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    reasons = ("wrong_answer", "truncated", "no_answer_line", "exact_duplicate")
    counts = dict.fromkeys(reasons, 0)
    with open(d / "kept.jsonl", "w") as kf, open(d / "rejected.jsonl", "w") as rf:
        for i in range(n):
            a, b, noun = rng.randint(1, 99), rng.randint(1, 99), rng.choice(NOUNS)
            words = " ".join(rng.choice(WORDS) for _ in range(18))
            text = (
                f"{rng.choice(['Lily', 'Omar', 'Nora', 'Ali'])} starts with {a} {noun} and "
                f"{words} {b} {noun}, so {a} + {b} = {a + b}.\nThe {noun} {words}.\n"
                f"Answer: {a + b}"
            )
            g = generated(f"q-{i // 4:06d}", i % 4, "teacher", text, str(a + b))
            if i % 3 == 0:
                kf.write(json.dumps(kept_row(g, str(a + b))) + "\n")
            else:
                reason = reasons[i % 4]
                counts[reason] += 1
                rf.write(json.dumps(rejected_row(g, reason, str(a))) + "\n")
    kept = n - sum(counts.values())
    report = {"input": n, "kept": kept, "rejected": n - kept, "reasons": counts, "teachers": {}}
    (d / "report.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of 100,000 synthetic samples (25,000 questions), written to disk."""
    d = tmp_path_factory.mktemp("big") / "filter"
    synthetic_filter_dir(d, 100_000)
    t0 = time.monotonic()
    data = RunData("big", [], {}, funnel=read_funnel(d), samples=read_samples(d))
    html = render(data)
    seconds = time.monotonic() - t0
    path = d.parent / "report.html"
    path.write_text(html)
    return {"data": data, "html": html, "seconds": seconds, "path": path}


def test_100k_samples_stay_under_the_stated_size_bound(big):
    html, seconds, data = big["html"], big["seconds"], big["data"]
    size = len(html.encode())
    assert data.samples is not None and len(data.samples.question) == 100_000
    assert size < SIZE_BOUND_100K, f"{size:,} bytes"
    assert seconds < 20, f"{seconds:.1f} s"  # 2.5 s on 2 cores: room for a busy machine
    s = payload(html)["samples"]
    assert len(s["x"]) == 100_000 and s["qid"][s["q"][99_999]] == "q-024999"
    print(f"100k samples: {size:,} bytes in {seconds:.1f} s")


def test_100k_samples_open_in_a_real_browser_within_the_bound(big):
    """The bound (OPEN_100K_S, stated in docs/guides/report.md): the page decompresses and
    shows its first page of 100,000 samples in about 1.5 s on 2 cores, 20 s is room for a
    busy machine; a question id finds its 4 samples among them."""
    from browser import opened

    t0 = time.monotonic()
    with opened(big["path"], timeout_s=OPEN_100K_S) as (page, errors):
        opened_s = time.monotonic() - t0
        assert page.text_content("#s-results .pager span") == "1-50 of 100,000"
        page.fill("#s-qid", "q-024999")
        page.wait_for_selector("#s-question h3")
        assert len(page.query_selector_all("#s-question tr")) == 1 + 4
        assert errors == []
    assert opened_s < OPEN_100K_S, f"{opened_s:.1f} s"


def test_a_file_that_cannot_be_read_is_a_note_not_a_crash(tmp_path):
    """A stage complete by its manifest whose file is damaged all the same: that section says
    why it is empty, the others are shown."""
    cfg, _ = make_run(tmp_path)
    stages = gather(cfg).stages
    eval_dir = next(s.dir for s in stages if s.label == "eval")
    assert eval_dir is not None
    (eval_dir / "metrics.json").write_text("{not json")
    data = collect("default", stages, {})  # the states as read before the damage
    assert data.eval is None and "could not read eval" in data.notes["eval"]
    assert data.funnel is not None and data.training is not None
    assert "could not read eval" in render(data)


def test_samples_past_the_cap_are_counted_not_embedded(tmp_path, monkeypatch):
    d = tmp_path / "filter"
    synthetic_filter_dir(d, 30)
    monkeypatch.setattr(samples_module, "MAX_SAMPLES", 12)
    s = read_samples(d)
    assert s.total == 30 and len(s.question) == len(s.text) == 12
    html = render(RunData("r", [], {}, samples=s))
    assert "30 samples" in html and "12 embedded" in html


def test_onpolicy_rounds_are_plotted_by_round(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    rounds = [{"round": r, "loss": 0.5 / r, "reverse_kl": 0.2 / r, "steps": 4} for r in (1, 2, 3)]
    _jsonl(d / "train_log.jsonl", rounds)
    val = [{"step": r, "epoch": r, "accuracy": a, "n": 20} for r, a in ((1, 0.6), (3, 0.7))]
    _jsonl(d / "validation.jsonl", val)
    stats = {"objective": "onpolicy", "select": "best", "selected_step": 3}
    (d / "train_stats.json").write_text(json.dumps(stats | {"selected_validation_accuracy": 0.7}))
    t = read_training(d)
    assert t.x == "round" and [c.name for c in t.curves] == ["loss", "reverse_kl"]
    assert t.curves[1].points == [(1.0, 0.2), (2.0, 0.1), (3.0, 0.2 / 3)]
    assert t.selected == 3.0 and "round 3 has the highest validation accuracy" in t.why


def test_epochs_auto_says_how_many_epochs_ran_and_why_it_stopped(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    _jsonl(d / "train_log.jsonl", [{"step": s, "loss": 1.0 / s} for s in (5, 10, 15)])
    val = [{"step": s, "epoch": s / 5, "accuracy": a, "n": 37} for s, a in ((5, 0.43), (10, 0.62))]
    _jsonl(d / "validation.jsonl", val)
    why = "validation accuracy has not risen beyond noise (±15.6 points) for 1 epoch(s) since 2"
    stats = {"select": "best", "selected_step": 10, "selected_validation_accuracy": 0.62}
    stats["epochs_auto"] = {"ran": 3.0, "max_epochs": 5, "why": why}  # as train writes it
    (d / "train_stats.json").write_text(json.dumps(stats))
    t = read_training(d)
    assert "step 10 has the highest validation accuracy" in t.why
    assert f"trained 3 epochs of at most 5 (train.epochs: auto): {why}" in t.why
    html = render(RunData("r", [], {}, training=t))
    assert "trained 3 epochs of at most 5" in html
