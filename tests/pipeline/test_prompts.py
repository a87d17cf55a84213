"""Prompt rendering (pipeline/prompts.py) on its own: worked examples as asked or refused, the
teacher's prompt from its config, a template's hash as keys hold it, and a choice question's
letters. (Turns against inline examples: test_tasks.py.)"""

from __future__ import annotations

import hashlib

import pytest

from pipeline.config import ConfigError, TaskConfig, TeacherConfig
from pipeline.prompts import (
    fewshot_examples,
    render_messages,
    teacher_messages,
    template_bytes,
    template_path,
)
from pipeline.tasks import Question, load_task


def test_worked_examples_are_the_first_k_or_a_config_error() -> None:
    task = load_task(TaskConfig(source="bundled:arith", split_by="fact"))
    assert fewshot_examples(task, 1) == task.fewshot[:1]
    assert fewshot_examples(task, 0) == []
    with pytest.raises(ConfigError, match="teacher.fewshot") as e:
        fewshot_examples(task, len(task.fewshot) + 1)
    assert f"has {len(task.fewshot)}" in str(e.value)


def test_the_teachers_prompt_is_its_template_examples_and_system() -> None:
    task = load_task(TaskConfig(source="bundled:arith", split_by="fact"))
    t = TeacherConfig(system="think step by step")
    q, shots = task.train[0], fewshot_examples(task, 1)
    got = teacher_messages(t, q, shots)
    assert got == render_messages(
        t.template, q, fewshot=shots, system=t.system, fewshot_style=t.fewshot_style
    )
    assert got[0] == {"role": "system", "content": "think step by step"}
    assert q.question in got[-1]["content"]


def test_a_templates_hash_is_its_files_sha256() -> None:
    path = template_path("student_zeroshot.j2")
    assert template_bytes("student_zeroshot.j2") == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_choice_question_shows_its_letters() -> None:
    q = Question("q1", "Which is a fruit?", "B", "choice", ("stone", "apple"))
    (msg,) = render_messages("student_zeroshot.j2", q)
    assert msg["role"] == "user" and "A) stone" in msg["content"] and "B) apple" in msg["content"]
