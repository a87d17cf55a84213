"""Task loading, the held-out split, and prompt rendering."""

from __future__ import annotations

import json

import pytest

from pipeline.config import ConfigError, TaskConfig
from pipeline.paths import ROOT
from pipeline.prompts import render_messages
from pipeline.records import DataError
from pipeline.splits import splits_line
from pipeline.tasks import _inline_choices, load_task


def test_bundled_split_by_fact_shares_no_fact_and_is_deterministic():
    cfg = TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3)
    task = load_task(cfg)
    facts = {r["id"]: r["fact"] for r in map(json.loads, (ROOT / "data/arith.jsonl").open())}
    train_facts = {facts[q.id] for q in task.train}
    eval_facts = {facts[q.id] for q in task.eval}
    val_facts = {facts[q.id] for q in task.validation}
    assert train_facts and eval_facts and val_facts
    assert not train_facts & eval_facts and not val_facts & (train_facts | eval_facts)
    # 84 validation questions (7 whole facts of 12) are under the cap of 100: none is dropped.
    assert len(task.train) + len(task.validation) + len(task.eval) == len(facts)
    assert len(task.eval) >= 200 and len(task.validation) == 84
    again = load_task(TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3))
    assert [q.id for q in again.eval] == [q.id for q in task.eval]
    assert [q.id for q in again.validation] == [q.id for q in task.validation]


@pytest.mark.parametrize(
    "fraction, floor, cap, want",
    [
        (0.0, 20, 100, 0),  # no validation split: train keeps every question
        (0.1, 20, 100, 84),  # 7 of 64 train facts (a tenth, rounded up) of 12 questions
        (0.1, 120, 1000, 120),  # the floor holds out facts until 120 questions
        (0.1, 20, 30, 30),  # the cap: 30 of the held-out facts' questions
        (0.5, 20, 1000, 384),  # half of the facts
    ],
)
def test_validation_split_fraction_floor_and_cap(fraction, floor, cap, want):
    cfg = TaskConfig(
        source="bundled:arith",
        split_by="fact",
        eval_fraction=0.3,
        validation_fraction=fraction,
        min_validation=floor,
        max_validation=cap,
    )
    task = load_task(cfg)
    assert len(task.validation) == want
    held = {q.group for q in task.validation}
    assert not held & {q.group for q in task.train}  # whole facts, even beyond the cap
    assert not {q.id for q in task.validation} & {q.id for q in task.eval}
    # The eval split never moves with the validation split.
    plain = load_task(TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3))
    assert [q.id for q in task.eval] == [q.id for q in plain.eval]


def test_validation_never_takes_the_last_train_group():
    cfg = TaskConfig(
        source="bundled:arith",
        split_by="fact",
        eval_fraction=0.3,
        validation_fraction=0.99,
    )
    task = load_task(cfg)
    assert len({q.group for q in task.train}) == 1 and task.validation


def _small_task(tmp_path, n: int) -> TaskConfig:
    """n questions, each its own group."""
    path = tmp_path / f"small{n}.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskConfig(source=f"jsonl:{path}", answer_type="numeric")


def test_the_floor_gives_way_on_a_small_task_which_keeps_most_for_training(tmp_path):
    """40 questions: the floor of 20 would take 20 of the 30 train questions; validation takes
    a quarter at most, and the splits say so."""
    task = load_task(_small_task(tmp_path, 40))
    split = len(task.train) + len(task.validation)
    assert 5 <= len(task.validation) <= split / 4 and len(task.train) >= 3 * split / 4
    assert task.small == "share"
    line = splits_line(task.name, task.sizes(), task.carved)
    assert line.startswith(f"task small40: train {len(task.train)} · validation ")
    assert "task.min_validation 20 gave way: validation takes at most 25%" in line


def test_a_task_too_small_for_validation_trains_without_it_and_says_so(tmp_path):
    task = load_task(_small_task(tmp_path, 12))
    assert task.validation == [] and task.small == "none" and len(task.train) >= 8
    assert "no validation split" in task.carved and "trains without one" in task.carved


def test_the_default_split_is_as_before_and_said_up_front():
    """The size rule binds only on small tasks: the default's split (and so its keys, pinned
    in test_config.py) is what the floor alone gave."""
    from pipeline.config import load_config, shipped_config
    from stages.generate import key_parts

    cfg = load_config(shipped_config("default"), [])
    task = load_task(cfg.task)
    assert task.small == "" and task.sizes() == {"train": 400, "validation": 84, "eval": 300}
    assert splits_line(task.name, task.sizes(), task.carved) == (
        "task arith: train 400 · validation 84 · eval 300 (eval: 30% of the groups by fact; "
        "validation: 10% of the train split's groups, at least 20 questions; task.max_train "
        "keeps 400 of 684; task.max_eval keeps 300 of 312)"
    )
    assert "small_task" not in key_parts(cfg).extra


def test_a_small_tasks_split_is_in_generates_key(tmp_path):
    from pipeline.config import load_config
    from stages.generate import key_parts

    cfg = load_config(
        None,
        [
            f"task.source=jsonl:{_small_task(tmp_path, 40).source[6:]}",
            "task.answer_type=numeric",
            f"cache_dir={tmp_path / 'c'}",
        ],
    )
    assert key_parts(cfg).extra["small_task"] == "share"


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


def test_jsonl_column_map_and_errors(tmp_path):
    f = tmp_path / "qs.jsonl"
    f.write_text('{"qid": "a", "problem": "2+2?", "sol": "4"}\n{"qid": "b", "problem": "3+3?"}\n')
    with pytest.raises(DataError, match=r"qs.jsonl:2: missing field 'sol'"):
        load_task(
            TaskConfig(
                source=f"jsonl:{f}", columns={"id": "qid", "question": "problem", "answer": "sol"}
            )
        )
    f.write_text(
        "".join(
            f'{{"qid": "{c}", "problem": "{i}+{i}?", "sol": {2 * i}}}\n'
            for i, c in enumerate("abcdefgh")
        )
    )
    task = load_task(
        TaskConfig(
            source=f"jsonl:{f}",
            columns={"id": "qid", "question": "problem", "answer": "sol"},
            eval_fraction=0.5,
        )
    )
    got = {(q.id, q.question, q.answer) for q in task.train + task.validation + task.eval}
    assert ("b", "1+1?", "2") in got and len(got) == 8  # a number answer read as its text


def test_olmo_benchmarks_load_from_the_package():
    gsm = load_task(TaskConfig(source="olmo:gsm8k", eval_fraction=0.5))
    q = (gsm.train + gsm.eval)[0]
    assert q.answer.lstrip("-").isdigit() and q.answer_type == "numeric"
    csqa = load_task(TaskConfig(source="olmo:csqa", eval_fraction=0.5))
    c = (csqa.train + csqa.eval)[0]
    assert c.answer in "ABCDE" and len(c.choices) == 5 and c.answer_type == "choice"
    arc = load_task(TaskConfig(source="olmo:arc_easy", eval_fraction=0.3))
    for q in (c, *arc.train[:20]):
        # OLMo's mc requests list the choices inside the query: the prompt gets the stem and
        # the choice texts, not "Question: ... Answer:" with choices "A", "B", ...
        assert not q.question.startswith("Question:") and not q.question.endswith("Answer:")
        assert q.choices != tuple("ABCDE"[: len(q.choices)])
    assert arc.sizes() == {"train": 361, "validation": 41, "eval": 168}


def test_olmo_inline_choices_are_read_only_from_their_exact_shape():
    query = "Question: Which is a star?\n A. the Sun\n B. the Moon\nAnswer:"
    assert _inline_choices(query, ["A", "B"]) == ("Which is a star?", ["the Sun", "the Moon"])
    assert _inline_choices(query, ["A", "B", "C"]) is None  # a count that does not match
    assert _inline_choices(query.replace(" B.", " C."), ["A", "B"]) is None  # a label out of order
    assert _inline_choices("Which is a star?", ["A", "B"]) is None  # no inline choices at all


# --- every task row is checked; a bad one is named by file:line -----------------------------


def _task_file(tmp_path, lines: list[str | bytes], name: str = "qs.jsonl"):
    p = tmp_path / name
    p.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return p


def _row(i: int, **over) -> str:
    row = {"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i), "topic": "t"}
    row.update(over)
    return json.dumps({k: v for k, v in row.items() if v is not ...})


GOOD = [_row(i) for i in range(1, 9)]


@pytest.mark.parametrize(
    "bad, line, words",
    [
        (_row(3, answer=None), 3, "'answer' must be a string or a number, got null"),
        (_row(3, answer=[1, 2]), 3, "got list"),
        (_row(3, answer={"v": 1}), 3, "got dict"),
        (_row(3, answer=True), 3, "got bool"),
        (_row(3, answer=""), 3, "got an empty string"),
        (_row(3, question=""), 3, "'question' must be a non-empty string"),
        (_row(3, question=7), 3, "'question' must be a non-empty string, got int"),
        (_row(3, question=...), 3, "missing field 'question'"),
        (_row(3, id=None), 3, "field 'id' must be a string or number, got null"),
        (_row(3, choices="A, B"), 3, "must be a list of strings"),
        ('{"id": "q3", "answer": ' + "1" * 5000 + "}", 3, "not usable JSON"),
        ('{"id": "q3", "answer": ' + "[" * 100000 + "]" * 100000 + "}", 3, "nested too deeply"),
        (b'{"id": "q3", "question": "caf\xe9?", "answer": "1"}', 3, "not UTF-8 (byte 0xe9"),
        ('["q3", "What?", "1"]', 3, "expected a JSON object, got list"),
        ('{"id": "q3", "question": "x?", "answer": ', 3, "not valid JSON"),
        (_row(3, id="q1", question="What is 99?"), 3, "duplicate id 'q1' (first on line 1)"),
    ],
)
def test_bad_task_rows_are_named_by_file_and_line(tmp_path, bad, line, words):
    lines = [*GOOD[:2], bad, *GOOD[3:]]
    p = _task_file(tmp_path, lines)
    with pytest.raises(DataError) as e:
        load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5))
    assert f"{p}:{line}:" in str(e.value) and words in str(e.value), str(e.value)


def test_same_question_twice_is_refused_with_both_lines(tmp_path):
    """Two ids, one prompt: their samples could not be told apart, so one question would be
    lost and its samples appear twice under the other's id and gold."""
    twin = _row(9, question="What is 4 + 4?", answer="9")
    p = _task_file(tmp_path, [*GOOD, twin])
    with pytest.raises(DataError, match=rf"{p}:9: the same question as line 4"):
        load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5))


def test_split_by_field_must_be_on_every_row(tmp_path):
    """A field no row has used to turn the split's leak guard off without a word."""
    p = _task_file(tmp_path, [*GOOD[:5], _row(6, topic=...), *GOOD[6:]])
    with pytest.raises(DataError, match=rf"{p}:6: task.split_by field 'topic' is missing"):
        load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5, split_by="topic"))
    with pytest.raises(DataError, match=rf"{p}:1: task.split_by field 'fact' is missing"):
        load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5, split_by="fact"))


def test_bom_crlf_and_blank_lines_are_read(tmp_path):
    body = ("\r\n".join(GOOD[:4]) + "\r\n\r\n" + "\n".join(GOOD[4:]) + "\n").encode()
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + body)
    task = load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5))
    assert sorted(q.id for q in task.train + task.validation + task.eval) == [
        f"q{i}" for i in range(1, 9)
    ]
    assert {q.answer for q in task.train + task.validation + task.eval} == {
        str(2 * i) for i in range(1, 9)
    }


def test_an_empty_split_is_refused_before_any_work(tmp_path):
    p = _task_file(tmp_path, GOOD[:1])
    with pytest.raises(DataError, match="split is empty"):
        load_task(TaskConfig(source=f"jsonl:{p}", eval_fraction=0.5))


def test_fewshot_beyond_the_task_examples_is_a_config_error():
    from pipeline.prompts import fewshot_examples

    task = load_task(TaskConfig(source="bundled:arith", split_by="fact"))
    assert len(fewshot_examples(task, 2)) == 2
    with pytest.raises(ConfigError, match=r"teacher\.fewshot: 3 worked examples asked for"):
        fewshot_examples(task, 3)


def test_bundled_task_has_no_repeated_question():
    rows = [json.loads(x) for x in (ROOT / "data/arith.jsonl").read_text().splitlines()]
    assert len({r["question"] for r in rows}) == len(rows) == 1080
