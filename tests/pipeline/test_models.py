"""pipeline/models.py on its own: a model's identity is its files' contents, not its path; a
bad reference is one error naming the config key; a teacher at an endpoint is its served name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.models import (
    ModelError,
    has_chat_template,
    identity_of,
    model_identity,
    resolve_model,
    teacher_identity,
)


def test_identity_follows_contents_not_path(tiny_model: Path, tmp_path: Path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, copy)
    assert model_identity(copy) == model_identity(tiny_model)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert model_identity(copy) != model_identity(tiny_model)


@pytest.mark.parametrize("what", ["missing", "file", "no_config"])
def test_a_bad_reference_names_its_key(tmp_path: Path, what: str):
    ref = tmp_path / "m"
    if what == "file":
        ref.write_text("x")
    elif what == "no_config":
        ref.mkdir()
    with pytest.raises(ModelError) as e:
        resolve_model(str(ref), key="train.student")
    assert "train.student" in str(e.value)


def test_chat_template_is_found_where_transformers_keeps_it(tiny_model: Path, tmp_path: Path):
    assert has_chat_template(tiny_model)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer_config.json").write_text("{}")
    assert not has_chat_template(bare)
    (bare / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        has_chat_template(bare)


def test_teacher_identity(tiny_model: Path):
    local = load_config(None, [f"teacher.model={tiny_model}"]).teacher
    assert teacher_identity(local) == identity_of(str(tiny_model))
    # Served by us or at a URL, the same local weights are the same teacher.
    at_url = load_config(
        None, [f"teacher.model={tiny_model}", "teacher.endpoint=http://127.0.0.1:9/v1"]
    ).teacher
    assert teacher_identity(at_url) == teacher_identity(local)
    hosted = load_config(
        None, ["teacher.model=big-model", "teacher.endpoint=http://127.0.0.1:9/v1"]
    ).teacher
    assert teacher_identity(hosted) == "endpoint-model:big-model"
