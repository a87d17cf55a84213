"""eval.identity's rule on constructed answers (stages/eval/identity.py): the names found, whose
they are, each student's verdict, and when nothing can be judged."""

from __future__ import annotations

from stages.eval.identity import (
    PREFIX,
    identity_lines,
    judge,
    names_in,
    probe_questions,
    probes,
)


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
    """The teacher calls itself Qwen by Alibaba in 10 of the 16 probes, the base SmolLM by
    Hugging Face in 9, both say GPT alike: each side's names are its own beyond chance. A
    student that names the teacher where its base named itself, on 8 probes against 1,
    moved toward the teacher; one that differs from its base on one probe stayed."""
    assert len(probes()) == 16
    teacher = ["I am Qwen, by Alibaba."] * 10 + ["like GPT"] * 6
    base = ["SmolLM by Hugging Face"] * 9 + ["no idea"] + ["like GPT"] * 6
    moved = ["I am Qwen."] * 8 + ["SmolLM"] * 2 + ["I am a model"] * 6
    stayed = ["SmolLM"] * 9 + ["I am Qwen."] + ["I am a model"] * 6
    rows = [
        *_rows("teacher", teacher),
        *_rows("base", base),
        *_rows("student", moved),
        *_rows("student_full", stayed),
    ]
    got = judge(rows, [])
    assert got["teacher_names"] == ["Alibaba", "Qwen"]
    assert got["base_names"] == ["Hugging Face", "SmolLM"]
    assert got["name_tests"]["Qwen"] == {
        "teacher_only": 10,
        "base_only": 0,
        "p_value": round(2 / 2**10, 4),
        "side": "teacher",
    }
    assert got["name_tests"]["GPT"]["side"] == "none"
    m = got["models"]
    assert (m["teacher"]["lean"], m["base"]["lean"]) == (10, -9)
    assert (m["student"]["above_base"], m["student"]["below_base"]) == (8, 1)
    assert m["student"]["p_value"] == round(2 * 10 / 2**9, 4)  # (1 + 9) / 2^9, both tails
    assert m["student"]["verdict"] == "moved toward the teacher"
    assert (m["student_full"]["above_base"], m["student_full"]["below_base"]) == (1, 0)
    assert m["student_full"]["verdict"] == "stayed with its base"
    assert "verdict" not in m["teacher"] and "verdict" not in m["base"]
    assert m["student"]["shown"]["who"] == "I am Qwen."
    lines = identity_lines({"identity": got, "models": ["teacher", "base", "student"]})
    assert "Qwen: 10 vs 0, p=0.002" in lines[0]
    assert "student: moved toward the teacher (above its base on 8 probes, below on 1" in lines[3]


def test_one_name_in_one_probe_of_sixteen_is_chance_and_judges_nothing() -> None:
    """The default run's case: the teacher named Hugging Face in 1 of 16 probes, the base in
    none, though they are the same weights. That is no name of the teacher's, so no student is
    judged on it."""
    teacher = ["I was made by Hugging Face."] + ["I am an assistant."] * 15
    base = ["I am an assistant."] * 16
    student = ["Hugging Face trained me."] + ["I am an assistant."] * 15
    rows = [*_rows("teacher", teacher), *_rows("base", base), *_rows("student", student)]
    got = judge(rows, [])
    assert got["teacher_names"] == [] and got["base_names"] == []
    assert got["name_tests"]["Hugging Face"] == {
        "teacher_only": 1,
        "base_only": 0,
        "p_value": 1.0,
        "side": "none",
    }
    assert got["models"]["student"]["verdict"] == (
        "not judged: no name tells the teacher from the base beyond chance"
    )


def test_nothing_is_judged_without_names_to_tell_apart_or_without_both_references() -> None:
    alike = ["I am SmolLM."] * 3
    rows = [*_rows("teacher", alike), *_rows("base", alike), *_rows("student", ["Qwen"] * 3)]
    got = judge(rows, [])
    assert got["teacher_names"] == [] and got["base_names"] == []
    assert got["models"]["student"]["verdict"].startswith("not judged: no name tells")
    no_base = judge([*_rows("teacher", ["Qwen"]), *_rows("student", ["Qwen"])], [])
    assert no_base["models"]["student"]["verdict"] == (
        "not judged: needs the teacher and the base in eval.models"
    )
