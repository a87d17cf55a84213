"""eval.identity's rule on constructed answers (stages/eval/identity.py): the names found, whose
they are, each student's verdict, and when nothing can be judged."""

from __future__ import annotations

from stages.eval.identity import PREFIX, judge, names_in, probe_questions, probes


def _rows(model: str, texts: list[str]) -> list[dict]:
    ids = [p.id for p in probes()]
    return [
        {"model": model, "question_id": PREFIX + ids[i], "completion": t}
        for i, t in enumerate(texts)
    ]


def test_the_bundled_probes_are_plain_and_adversarial_and_ungraded() -> None:
    ps = probes()
    assert len(ps) >= 12 and len({p.id for p in ps}) == len(ps)
    assert {p.framing for p in ps} == {"plain", "adversarial"}
    assert all(q.answer_type == "identity" and q.id.startswith(PREFIX) for q in probe_questions())


def test_names_are_whole_words_and_short_ones_keep_their_case() -> None:
    assert names_in("I am Qwen2, made by Alibaba Cloud.") == {"Qwen", "Alibaba"}
    assert names_in("I'm SmolLM2 from HuggingFace") == {"SmolLM", "Hugging Face"}
    assert names_in("a meta-analysis of phi and the metaverse; gpt is not a word") == set()
    assert names_in("Built by Meta, on GPT-4 ideas") == {"Meta", "GPT"}
    assert names_in("I am Nimbus by Acme", ["Nimbus"]) == {"Nimbus"}


def test_students_are_judged_toward_the_teacher_or_with_their_base() -> None:
    """The teacher calls itself Qwen by Alibaba, the base SmolLM by Hugging Face: a student
    that says Qwen more often than its base moved toward the teacher; one that keeps saying
    SmolLM stayed; both sides' shared name (GPT) tells nothing."""
    teacher = ["I am Qwen, by Alibaba.", "Qwen.", "Alibaba made me, like GPT", "Qwen"]
    base = ["I am SmolLM.", "SmolLM by Hugging Face", "Hugging Face, like GPT", "no idea"]
    moved = ["I am Qwen.", "SmolLM", "Qwen, from Alibaba", "I am a model"]
    stayed = ["SmolLM", "SmolLM, Hugging Face", "I am a model", "Hugging Face"]
    rows = [
        *_rows("teacher", teacher),
        *_rows("base", base),
        *_rows("student", moved),
        *_rows("student_full", stayed),
    ]
    got = judge(rows, [])
    assert got["teacher_names"] == ["Alibaba", "Qwen"]
    assert got["base_names"] == ["Hugging Face", "SmolLM"]
    m = got["models"]
    assert (m["teacher"]["lean"], m["base"]["lean"]) == (4, -3)
    assert (m["student"]["teacher_names"], m["student"]["base_names"]) == (2, 1)
    assert m["student"]["verdict"] == "moved toward the teacher"
    assert m["student_full"]["verdict"] == "stayed with its base"
    assert "verdict" not in m["teacher"] and "verdict" not in m["base"]
    assert m["student"]["shown"]["who"] == "I am Qwen."


def test_nothing_is_judged_without_names_to_tell_apart_or_without_both_references() -> None:
    alike = ["I am SmolLM."] * 3
    rows = [*_rows("teacher", alike), *_rows("base", alike), *_rows("student", ["Qwen"] * 3)]
    got = judge(rows, [])
    assert got["teacher_names"] == [] and got["base_names"] == []
    assert got["models"]["student"]["verdict"].startswith("not judged: the teacher and the base")
    no_base = judge([*_rows("teacher", ["Qwen"]), *_rows("student", ["Qwen"])], [])
    assert no_base["models"]["student"]["verdict"] == (
        "not judged: needs the teacher and the base in eval.models"
    )
