"""How a stage asks a student (stages/shared/models.py, student_spec): its weights served as
eval.serve says, under its label unless a served name is given; the very spec the three places
that asked a student built by hand before (on-policy rollouts, validation, eval's base and
trained students)."""

from __future__ import annotations

from pathlib import Path

from pipeline.ask import spec_from
from pipeline.config import load_config, shipped_config
from stages.shared.models import student_spec


def test_a_students_spec_is_the_one_each_place_built_by_hand() -> None:
    cfg = load_config(shipped_config("default"), ["eval.serve.replicas=2"])
    d, serve = Path("/models/student"), cfg.eval.serve
    rollouts = spec_from(serve, "student", d, served_name="student", max_logprobs=1)
    assert student_spec(cfg, d, "student", max_logprobs=1) == rollouts
    validation = spec_from(serve, "validation", d, served_name="student")
    assert student_spec(cfg, d, "validation", served_name="student") == validation
    base = spec_from(serve, "base", d, served_name="base", chat_template="t.jinja")
    assert student_spec(cfg, d, "base", chat_template="t.jinja") == base
    trained = student_spec(cfg, d, "student_answer_only", think_tags=("<think>", "</think>"))
    assert trained.served_name == "student_answer_only" and trained.replicas == 2
