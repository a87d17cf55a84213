"""filter on real teacher samples (vLLM over the tiny model) plus planted cases."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.records import atomic_write_jsonl, read_jsonl
from pipeline.stage import RunContext
from pipeline.tasks import load_task
from stages import filter as filt

RATIONALE = (
    "{a} plus {b}: we start with {a} things and then we add {b} more of them to the pile, "
    "counting each one carefully on our fingers while we go along so nothing is missed, and "
    "when we have counted them all together we get {s} in total as the final count. To check "
    "it we count again from the very start, one by one, pointing at every item in turn and "
    "saying each number out loud, and the second count agrees with the first one exactly, so "
    "we can be sure that our sum is right and we write it down below.\nAnswer: {s}"
)


def _planted(base: list[dict], cfg) -> tuple[list[dict], dict[str, str]]:
    """Real samples plus records planted to hit each check; returns rows and expected reasons."""
    task = load_task(cfg.task)
    q0, q1 = task.train[0], task.train[1]
    expect: dict[str, str] = {}
    template = base[0]

    def make(rid: str, q, text: str) -> dict:
        return {
            **template,
            "id": rid,
            "question_id": q.id,
            "gold": q.answer,
            "completion": text,
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
        }

    a = int(q0.answer)
    good = RATIONALE.format(a=a, b=0, s=a)
    rows = [make("good-1", q0, good)]
    rows.append(make("dup-exact", q0, "  " + good.upper() + "  "))  # same after normalizing
    expect["dup-exact"] = "exact_duplicate"
    near = good.replace("carefully", "slowly")  # one word: Jaccard of 5-shingles ~0.9
    rows.append(make("dup-near", q0, near))
    expect["dup-near"] = "near_duplicate"
    leak_q = task.eval[0]
    leak = f"This reminds me of: {leak_q.question} Anyway {q1.answer}.\nAnswer: {q1.answer}"
    rows.append(make("leak", q1, leak))
    expect["leak"] = "contaminated"
    rows.append(make("wrong", q1, f"I think so.\nAnswer: {int(q1.answer) + 1}"))
    expect["wrong"] = "wrong_answer"
    rows.append(make("noline", q1, "no final line here"))
    expect["noline"] = "no_answer_line"
    trunc = make("trunc", q1, f"Answer: {q1.answer}")
    trunc["finish_reason"] = "length"
    rows.append(trunc)
    expect["trunc"] = "truncated"
    rows.append(make("loop", q1, "la la la la " * 60 + f"\nAnswer: {q1.answer}"))
    expect["loop"] = "repetitive"
    return base + rows, expect


@pytest.mark.slow
def test_filter_on_real_samples_routes_every_record_once(tiny_generated: dict, tmp_path: Path):
    cfg = load_config(None, tiny_generated["overrides"])
    base = list(read_jsonl(tiny_generated["dir"] / "samples.jsonl"))
    assert base and all(r["teacher"] for r in base)
    rows, expect = _planted(base, cfg)
    gen = tmp_path / "gen"
    atomic_write_jsonl(gen / "samples.jsonl", rows)
    out = tmp_path / "filter"
    stats = filt.run(cfg, RunContext.of({"generate": gen}, out))

    kept = list(read_jsonl(out / "kept.jsonl"))
    rejected = list(read_jsonl(out / "rejected.jsonl"))
    report = json.loads((out / "report.json").read_text())
    kept_ids = [r["sample_id"] for r in kept]
    rej_ids = [r["id"] for r in rejected]
    assert sorted(kept_ids + rej_ids) == sorted(r["id"] for r in rows)  # each exactly once
    assert len(set(kept_ids + rej_ids)) == len(rows)
    assert report["kept"] + report["rejected"] == report["input"] == len(rows)
    assert sum(report["reasons"].values()) == report["rejected"]
    assert stats["kept"] == len(kept)

    reasons = {r["id"]: r["reason"] for r in rejected}
    for rid, reason in expect.items():
        assert reasons.get(rid) == reason, (rid, reasons.get(rid))
    assert "good-1" in kept_ids
    near = next(r for r in rejected if r["id"] == "dup-near")
    assert near["duplicate_of"] == "good-1"
    leak = next(r for r in rejected if r["id"] == "leak")
    assert leak["eval_question"] == load_task(cfg.task).eval[0].id
    assert report["contamination_matches"][0]["id"] == "leak"

    good = kept[kept_ids.index("good-1")]
    # The student's prompt is zero-shot: no teacher exemplar leaks into training data.
    assert (
        "Lily" not in good["prompt"][0]["content"] and "Question:" in good["prompt"][0]["content"]
    )
    assert good["completion"][0]["role"] == "assistant"
    assert good["completion"][0]["content"].endswith(f"Answer: {good['gold']}")
    assert good["answer"] == good["gold"]


def test_threshold_changes_the_filter_key_only(tmp_path: Path, tiny_model: Path):
    from pipeline.runner import plan

    base = [f"runs_dir={tmp_path}", f"teacher.model={tiny_model}"]
    a = plan(load_config(None, base), "filter")
    b = plan(load_config(None, [*base, "filter.near_threshold=0.7"]), "filter")
    assert a["generate"].key == b["generate"].key
    assert a["filter"].key != b["filter"].key


HOSTILE = [
    "",
    " ",
    "\x00\x01\x02\xff" * 100,
    "{" * 10000 + "}" * 3,
    "\\boxed{" * 5000,
    "Answer: " + "9" * 100000,
    "Answer: ∞ ½ −3 ٣",
    "🙂" * 50000,
    "Answer:\nAnswer:\nAnswer: \\frac{1}{0}",
    "a " * 200000,
]


def test_hostile_completions_never_crash(tmp_path: Path):
    cfg = load_config(None, ["teacher.model=/x", "task.max_train=20", "task.max_eval=20"])
    task = load_task(cfg.task)
    rng = random.Random(0)
    rows = []
    for i in range(120):
        q = task.train[i % len(task.train)]
        text = (
            HOSTILE[i % len(HOSTILE)]
            if i < 60
            else "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 3000)))
        )
        rows.append(
            {
                "id": f"h{i}",
                "question_id": q.id,
                "gold": q.answer,
                "answer_type": "numeric",
                "completion": text,
                "finish_reason": rng.choice(["stop", "length"]),
                "usage": {"completion_tokens": rng.randrange(0, 5000)},
            }
        )
    gen = tmp_path / "gen"
    atomic_write_jsonl(gen / "samples.jsonl", rows)
    stats = filt.run(cfg, RunContext.of({"generate": gen}, tmp_path / "out"))
    assert stats["kept"] + stats["rejected"] == len(rows)


def test_bad_sample_file_is_a_clear_error(tmp_path: Path):
    from pipeline.records import DataError

    cfg = load_config(None, ["teacher.model=/x"])
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "samples.jsonl").write_text('{"id": "a", "question_id": "q"}\n')
    with pytest.raises(DataError, match=r"samples.jsonl:1: .*'completion'"):
        filt.run(cfg, RunContext.of({"generate": gen}, tmp_path / "out"))


@pytest.mark.slow
def test_kept_jsonl_loads_in_datasets_and_trl_trains_on_it(
    tiny_generated: dict, tiny_model: Path, tmp_path: Path
):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cfg = load_config(None, tiny_generated["overrides"])
    rows, _ = _planted(list(read_jsonl(tiny_generated["dir"] / "samples.jsonl")), cfg)
    atomic_write_jsonl(tmp_path / "gen" / "samples.jsonl", rows)
    filt.run(cfg, RunContext.of({"generate": tmp_path / "gen"}, tmp_path / "filter"))

    ds = load_dataset("json", data_files=str(tmp_path / "filter" / "kept.jsonl"), split="train")
    assert {"prompt", "completion"} <= set(ds.column_names) and len(ds) >= 1
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"),
            max_steps=2,
            per_device_train_batch_size=2,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=ds,  # as written by filter: no conversion step
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    first = trainer.train_dataset[0]
    mask = first.get("completion_mask") or [int(t != -100) for t in first["labels"]]
    assert mask[0] == 0 and 1 in mask  # TRL saw a prompt to mask and a completion to learn
    out = trainer.train()
    assert out.global_step == 2 and out.training_loss > 0


# --- selection and dedup scope, on hand-made samples (the checks, not the teacher, are tested) --


def _samples(per_question: dict[str, list[str]]) -> tuple[list[dict], dict]:
    from pipeline.tasks import Question

    rows, questions = [], {}
    for qid, texts in per_question.items():
        questions[qid] = Question(qid, f"What is {qid}?", "7")
        for i, text in enumerate(texts):
            rows.append(
                {
                    "id": f"{qid}-{i}",
                    "question_id": qid,
                    "gold": "7",
                    "answer_type": "numeric",
                    "completion": text,
                    "finish_reason": "stop",
                    "usage": {"completion_tokens": len(text.split())},
                }
            )
    return rows, questions


def _cfg(*overrides: str):
    return load_config(None, ["filter.checks=[format, correct, exact_dedup]", *overrides]).filter


def test_selection_best_keeps_the_best_scored_sample_per_question() -> None:
    from stages.filter.passes import filter_records

    long = "We add three and four by counting up from three: four, five, six and then seven."
    rows, qs = _samples(
        {
            "a": ["No idea.\nAnswer: 8", long + "\nAnswer: 7", "3 + 4 = 7.\nAnswer: 7"],
            "b": ["Answer: 7", "Answer: 9"],
        }
    )
    checks = "filter.checks=[format, correct, length, repetition, exact_dedup]"
    kept, rejected, scores = filter_records(rows, _cfg(checks, "filter.selection=best"), qs, [])
    # Wrong answers fail `correct`; of the right ones, the shorter is best-scored (-0.001/token).
    assert sorted(r["id"] for r in kept) == ["a-2", "b-0"]
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"a-0": "wrong_answer", "a-1": "selection_cap", "b-1": "wrong_answer"}
    assert scores["a-2"]["score"] > scores["a-1"]["score"]


def test_a_per_question_cap_that_bites_keeps_the_first_ones() -> None:
    from stages.filter.passes import filter_records

    texts = [f"Step {i}: 3 + 4 = 7.\nAnswer: 7" for i in range(5)]
    rows, qs = _samples({"a": texts, "b": texts[:2]})
    kept, rejected, _ = filter_records(rows, _cfg("filter.per_question_cap=3"), qs, [])
    assert [r["id"] for r in kept] == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert {r["id"]: r["reason"] for r in rejected} == {
        "a-3": "selection_cap",
        "a-4": "selection_cap",
    }


def test_dedup_scope_global_removes_copies_across_questions() -> None:
    from stages.filter.passes import filter_records

    same = "Three plus four makes seven.\nAnswer: 7"
    rows, qs = _samples({"a": [same], "b": [same], "c": [same + " "]})
    kept, rejected, _ = filter_records(rows, _cfg(), qs, [])  # scope question: all kept
    assert len(kept) == 3 and not rejected
    kept, rejected, _ = filter_records(rows, _cfg("filter.dedup_scope=global"), qs, [])
    assert [r["id"] for r in kept] == ["a-0"]
    assert {r["id"]: (r["reason"], r["duplicate_of"]) for r in rejected} == {
        "b-0": ("exact_duplicate", "a-0"),
        "c-0": ("exact_duplicate", "a-0"),
    }


# --- several teachers: preference, balance, pass rates --------------------------------------


def _by_teacher(per_teacher: dict[str, dict[str, list[str]]]) -> tuple[list[dict], dict]:
    rows, qs = [], {}
    for teacher, per_q in per_teacher.items():
        r, q = _samples(per_q)
        for row in r:
            row["id"] = f"{teacher}:{row['id']}"
            row["teacher"] = teacher
        rows += r
        qs |= q
    return rows, qs


def test_prefer_teacher_keeps_its_style_and_others_fill_its_gaps() -> None:
    from stages.filter.passes import filter_records

    rows, qs = _by_teacher(
        {
            "big": {"a": ["Big says 3 + 4 = 7.\nAnswer: 7"], "b": ["Answer: 9"]},
            "small": {"a": ["Small: seven.\nAnswer: 7"], "b": ["Small: 7.\nAnswer: 7"]},
        }
    )
    cfg = dataclasses.replace(_cfg(), prefer_teacher="big")  # labels are checked in Config
    kept, rejected, _ = filter_records(rows, cfg, qs, [])
    assert sorted(r["id"] for r in kept) == ["big:a-0", "small:b-0"]  # b: big was wrong
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"big:b-0": "wrong_answer", "small:a-0": "other_teacher_preferred"}


def test_balanced_selection_takes_each_teacher_s_best_in_turn() -> None:
    from stages.filter.passes import filter_records

    ok = [f"Way {i}: 3 + 4 = 7, checked {'again ' * i}.\nAnswer: 7" for i in range(3)]
    rows, qs = _by_teacher({"t1": {"a": ok}, "t2": {"a": ok[:2]}})
    for r in rows:  # the same texts under two teachers: not duplicates in this test
        r["completion"] = r["teacher"] + " " + r["completion"]
    kept, _, _ = filter_records(rows, _cfg("filter.selection=balanced"), qs, [])
    assert sorted(r["id"] for r in kept) == ["t1:a-0", "t2:a-0"]  # one each, the shortest
    kept, _, _ = filter_records(
        rows, _cfg("filter.selection=balanced", "filter.per_question_cap=3"), qs, []
    )
    assert sorted(r["id"] for r in kept) == ["t1:a-0", "t1:a-1", "t2:a-0"]


def test_pass_rate_bounds_drop_too_easy_and_too_hard_questions(tmp_path: Path) -> None:
    """Run through the stage: rates per question and teacher in the report and the kept rows."""
    from pipeline.config import load_config as load

    cfg = load(None, [f"runs_dir={tmp_path}"])
    task = load_task(cfg.task)
    easy, mid, hard = task.train[:3]
    per_q = {
        easy.id: [f"{easy.answer} it is.\nAnswer: {easy.answer}", f"Answer: {easy.answer}"],
        mid.id: [f"So {mid.answer}.\nAnswer: {mid.answer}", "Answer: 123456"],
        hard.id: ["Answer: 123456", "No answer here"],
    }
    gold = {q.id: q.answer for q in (easy, mid, hard)}
    rows = []
    for qid, texts in per_q.items():
        for i, text in enumerate(texts):
            rows.append(
                {
                    "id": f"{qid}-{i}",
                    "question_id": qid,
                    "gold": gold[qid],
                    "answer_type": "numeric",
                    "completion": text,
                    "finish_reason": "stop",
                    "usage": {"prompt_tokens": 7, "completion_tokens": 5 + i},
                    "teacher": "t",
                }
            )
    gen = tmp_path / "gen"
    gen.mkdir()
    atomic_write_jsonl(gen / "samples.jsonl", rows)
    checks = "filter.checks=[format, correct, exact_dedup]"
    # 6 samples of 7 prompt and 5 or 6 completion tokens (33 in all): the tokens each kept
    # sample cost count the dropped ones' too
    tokens = (
        {
            "prompt": 42,
            "completion": 33,
            "prompt_on_dropped": 21,
            "completion_on_dropped": 17,
            "prompt_per_kept": 14.0,
            "completion_per_kept": 11.0,
        },
        {
            "prompt": 42,
            "completion": 33,
            "prompt_on_dropped": 35,
            "completion_on_dropped": 28,
            "prompt_per_kept": 42.0,
            "completion_per_kept": 33.0,
        },
    )
    for (bounds, kept_q), spent in zip(
        (
            ([], {easy.id, mid.id}),
            (["filter.min_pass_rate=0.01", "filter.max_pass_rate=0.99"], {mid.id}),
        ),
        tokens,
        strict=True,
    ):
        out = tmp_path / f"out{len(bounds)}"
        out.mkdir()
        c = load(None, [f"runs_dir={tmp_path}", checks, *bounds])
        stats = filt.run(c, RunContext.of({"generate": gen}, out))
        kept = list(read_jsonl(out / "kept.jsonl"))
        assert {r["question_id"] for r in kept} == kept_q
        for r in kept:
            assert r["pass_rate"] == {easy.id: 1.0, mid.id: 0.5}[r["question_id"]]
            assert r["pass_rate_by_teacher"] == {"t": r["pass_rate"]}
        report = json.loads((out / "report.json").read_text())
        assert (
            report["pass_rate"]["never_solved"] == 1 and report["pass_rate"]["always_solved"] == 1
        )
        assert report["pass_rate"]["per_question"][mid.id] == {"t": {"verified": 1, "sampled": 2}}
        assert report["teachers"]["t"] == {
            "samples": 6,
            "verified": 3,
            "kept": len(kept),
            "questions": 3,
            "questions_solved": 2,
            "tokens": spent,
        }
        assert report["tokens"] == stats["tokens"] == spent
        assert (
            "51.5% of them on dropped samples; 11.0 per kept" in filt.summary(stats, out) or bounds
        )
        if bounds:
            assert stats["reasons"]["too_easy"] == 2 and stats["reasons"]["too_hard"] == 2


def test_decontamination_tells_the_tasks_template_from_a_leak() -> None:
    """A templated task (issue 47): every train and eval question is one sentence with other
    numbers, so 8-grams of the template reach from a sample's own question into eval's. Every
    n-gram counted, samples that restate their question are dropped as contaminated; with the
    template set aside (an eval n-gram a train question holds) none is, while a sample with an
    eval question pasted into it still is."""
    from pipeline.reasoning import Convention
    from pipeline.tasks import Question
    from stages.filter.passes import decide, filter_records

    def q(qid: str, a: int, b: int) -> Question:
        text = f"A box holds {a} pencils. Tom adds {b} pencils to the box. How many pencils are in the box?"
        return Question(qid, text, str(a + b))

    train = {f"t{i}": q(f"t{i}", i, 3) for i in range(1, 7)}
    evals = [q("e1", 9, 3), q("e2", 8, 5)]
    rows = [
        {
            "id": f"s{k}",
            "question_id": qid,
            "gold": tq.answer,
            "answer_type": "numeric",
            "completion": f"Tom adds 3 pencils to the box. So {tq.answer}.\nAnswer: {tq.answer}",
            "finish_reason": "stop",
            "usage": {"completion_tokens": 12},
        }
        for k, (qid, tq) in enumerate(train.items())
    ]
    leak = dict(rows[0], id="leak", completion=f"As in: {evals[1].question}\nAnswer: 4")
    rows.append(leak)
    checks = "filter.checks=[format, correct, decontaminate]"
    every = _cfg(checks, "filter.decontam_n=8", "filter.decontam_template=0")  # before issue 47
    _, dropped, _ = filter_records(rows, every, train, evals)
    assert {r["id"] for r in dropped} == {r["id"] for r in rows}  # every one "contaminated"
    aside = _cfg(checks, "filter.decontam_n=8")  # the default sets the template aside
    kept, dropped, _ = filter_records(rows, aside, train, evals)
    assert [r["id"] for r in dropped] == ["leak"] and dropped[0]["reason"] == "contaminated"
    assert len(kept) == 6
    d = decide(lambda: rows, aside, train, evals, Convention(), bounds=False)
    assert d.template["ngrams"] > 0 and d.template["samples"] == 6
