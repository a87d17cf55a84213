"""What the stage keys need of a task without reading its questions: the source file's sha256,
the split's sizes and how they were carved.

Every `distill status`, `distill plan` and run computes the keys of its stages. Reading and
splitting a task of a million questions took 14 s on 2 cores; hashing its file takes 0.1 s.
The facts are a function of the file's bytes, the task config and the split's code, so they are
kept in the cache under a digest of all three (the code by the bytes of pipeline/tasks.py,
splits.py and hfdata.py): a kept
one is what load_task would say now, and one that is damaged or unreadable is computed again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pipeline import hfdata, splits, tasks
from pipeline.config import TaskConfig
from pipeline.models import cache_root
from pipeline.records import atomic_write_json


@dataclass(frozen=True)
class TaskFacts:
    source_hash: str  # the task file's sha256 (Task.source_hash)
    sizes: dict[str, int]  # Task.sizes(): train, validation, eval
    name: str = ""  # Task.name
    carved: str = ""  # Task.carved: how the splits were carved, in words
    small: str = ""  # Task.small: which size rule of validation bound, "" for none

    def line(self) -> str:
        """The three splits up front (splits.splits_line)."""
        return splits.splits_line(self.name, self.sizes, self.carved)


@cache
def _code() -> str:
    """The code that reads and splits a task: its modules' bytes."""
    mods = (tasks, splits, hfdata)
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in mods)).hexdigest()


def task_facts(cfg: TaskConfig, cache_dir: str = "") -> TaskFacts:
    """The task's facts: kept ones when the file, the config and the split's code are the same,
    else from load_task (kept for next time; a cache that cannot be written is no error)."""
    source = tasks.source_digest(cfg)
    digest = hashlib.sha256(
        json.dumps([dataclasses.asdict(cfg), source, _code()], sort_keys=True).encode()
    ).hexdigest()
    kept = cache_root(cache_dir) / "tasks" / f"{digest[:32]}.json"
    try:
        d = json.loads(kept.read_text())
        sizes = {k: int(v) for k, v in d["sizes"].items()}
        facts = TaskFacts(d["source_hash"], sizes, d["name"], d["carved"], d["small"])
        if facts.source_hash == source and set(facts.sizes) == {"train", "validation", "eval"}:
            return facts
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    task = tasks.load_task(cfg)
    facts = TaskFacts(task.source_hash, task.sizes(), task.name, task.carved, task.small)
    if facts.source_hash != source:  # the file changed under this process's loaded task
        return facts
    try:
        atomic_write_json(kept, dataclasses.asdict(facts))
    except OSError:
        pass
    return facts
