"""pipeline/taskfacts.py: the stage keys' facts of a task (its file's hash, its split's sizes)
are load_task's, kept in the cache so a key does not read a million questions again; a changed
file, config or damaged entry is computed again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import taskfacts, tasks
from pipeline.config import TaskConfig
from pipeline.taskfacts import task_facts


def _task(path: Path, n: int) -> TaskConfig:
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"{i}+1?", "answer": str(i + 1)}) + "\n"
            for i in range(n)
        )
    )
    return TaskConfig(source=f"jsonl:{path}", eval_fraction=0.25, split_by="")


def _unloadable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg: TaskConfig) -> None:
        raise AssertionError("the task was read again")

    monkeypatch.setattr(tasks, "load_task", refuse)


def test_facts_are_load_tasks_and_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = _task(tmp_path / "t.jsonl", 200)
    task = tasks.load_task(cfg)
    facts = task_facts(cfg, str(tmp_path / "cache"))
    assert facts.source_hash == task.source_hash and facts.sizes == task.sizes()
    assert facts.sizes["eval"] > 0 and sum(facts.sizes.values()) == 200
    _unloadable(monkeypatch)
    assert task_facts(cfg, str(tmp_path / "cache")) == facts  # kept: the task is not read


def test_a_changed_file_or_config_or_a_damaged_entry_is_computed_again(tmp_path: Path):
    cache = str(tmp_path / "cache")
    cfg = _task(tmp_path / "t.jsonl", 200)
    before = task_facts(cfg, cache)
    grown = _task(tmp_path / "t.jsonl", 300)  # the same config, another file
    tasks._load_task_cached.cache_clear()  # (load_task keeps a task per config in a process)
    assert task_facts(grown, cache).sizes == tasks.load_task(grown).sizes() != before.sizes
    other = TaskConfig(source=grown.source, eval_fraction=0.5, split_by="")
    assert task_facts(other, cache).sizes == tasks.load_task(other).sizes()
    for entry in (tmp_path / "cache" / "tasks").iterdir():
        entry.write_text('{"source_hash": "x", "sizes": {"train": 1}}')
    assert task_facts(other, cache).sizes == tasks.load_task(other).sizes()


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path):
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache dir would be")
    cfg = _task(tmp_path / "t.jsonl", 40)
    assert task_facts(cfg, str(cache)).sizes == tasks.load_task(cfg).sizes()


def test_the_split_code_is_part_of_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Another split rule (tasks.py changed) must not reuse facts kept by the old one."""
    cfg = _task(tmp_path / "t.jsonl", 100)
    task_facts(cfg, str(tmp_path / "cache"))
    monkeypatch.setattr(taskfacts, "_code", lambda: "another tasks.py")
    _unloadable(monkeypatch)
    with pytest.raises(AssertionError, match="read again"):
        task_facts(cfg, str(tmp_path / "cache"))
