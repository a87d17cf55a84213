"""Task loading, the held-out split, and prompt rendering."""

from __future__ import annotations

import json

import pytest

from pipeline.config import ConfigError, TaskConfig
from pipeline.records import DataError
from pipeline.tasks import ROOT, load_task, render_messages


def test_bundled_split_by_fact_shares_no_fact_and_is_deterministic():
    cfg = TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3)
    task = load_task(cfg)
    facts = {r["id"]: r["fact"] for r in map(json.loads, (ROOT / "data/arith.jsonl").open())}
    train_facts = {facts[q.id] for q in task.train}
    eval_facts = {facts[q.id] for q in task.eval}
    assert train_facts and eval_facts and not train_facts & eval_facts
    assert len(task.train) + len(task.eval) == len(facts)
    assert len(task.eval) >= 200
    again = load_task(TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3))
    assert [q.id for q in again.eval] == [q.id for q in task.eval]


def test_growing_the_cap_only_adds_questions():
    small = load_task(TaskConfig(source="bundled:arith", split_by="fact", max_train=50))
    big = load_task(TaskConfig(source="bundled:arith", split_by="fact", max_train=80))
    assert [q.id for q in big.train[:50]] == [q.id for q in small.train]


def test_fewshot_as_turns_or_inline():
    task = load_task(TaskConfig(source="bundled:arith", split_by="fact"))
    q, shots = task.train[0], task.fewshot[:1]
    turns = render_messages("student_zeroshot.j2", q, fewshot=shots, system="be brief")
    assert [m["role"] for m in turns] == ["system", "user", "assistant", "user"]
    assert turns[2]["content"] == shots[0]["rationale"]
    assert q.question in turns[3]["content"] and shots[0]["question"] not in turns[3]["content"]
    inline = render_messages("teacher_oneshot.j2", q, fewshot=shots, fewshot_style="inline")
    assert len(inline) == 1 and shots[0]["rationale"] in inline[0]["content"]
    student = render_messages("student_zeroshot.j2", q)
    assert student == turns[3:]  # the student sees the teacher's final turn, nothing before
    with pytest.raises(ConfigError, match="fewshot_style"):
        render_messages("student_zeroshot.j2", q, fewshot_style="sideways")


def test_jsonl_column_map_and_errors(tmp_path):
    f = tmp_path / "qs.jsonl"
    f.write_text('{"qid": "a", "problem": "2+2?", "sol": "4"}\n{"qid": "b", "problem": "3+3?"}\n')
    with pytest.raises(DataError, match=r"qs.jsonl:2: missing field 'sol'"):
        load_task(
            TaskConfig(
                source=f"jsonl:{f}", columns={"id": "qid", "question": "problem", "answer": "sol"}
            )
        )
    f.write_text('{"qid": "a", "problem": "2+2?", "sol": "4"}\n')
    task = load_task(
        TaskConfig(
            source=f"jsonl:{f}",
            columns={"id": "qid", "question": "problem", "answer": "sol"},
            eval_fraction=0.0,
        )
    )
    assert [(q.id, q.question, q.answer) for q in task.train] == [("a", "2+2?", "4")]


def test_olmo_benchmarks_load_from_the_package():
    gsm = load_task(TaskConfig(source="olmo:gsm8k", eval_fraction=0.5))
    q = (gsm.train + gsm.eval)[0]
    assert q.answer.lstrip("-").isdigit() and q.answer_type == "numeric"
    csqa = load_task(TaskConfig(source="olmo:csqa", eval_fraction=0.5))
    c = (csqa.train + csqa.eval)[0]
    assert c.answer in "ABCDE" and len(c.choices) == 5 and c.answer_type == "choice"
