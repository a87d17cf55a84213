"""`distill status`: every stage's state in the chains the config asks for (complete, partial,
corrupt, stale or missing), its rows, time and disk, read from the manifests and the stage dirs.
Quick by default (sizes against the manifest; a partial stage's own progress line); `--verify`
reads every output (row counts and sha256s)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cache import MANIFEST
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.runner import (
    StagePlan,
    chain,
    check_complete,
    manifest_rows,
    plan,
    run_dir,
    stage_module,
)
from pipeline.stage import STAGES, hook


@dataclass
class StageStatus:
    name: str
    state: str  # complete | partial | missing | stale | error
    key: str = ""
    dir: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    ended: str = ""
    note: str = ""
    disk: int | None = None  # bytes under the stage dir
    shared_disk: int = 0  # bytes of files the stage's keys share (generate's pool)


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed; 0 if it is not a dir)."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.is_file(follow_symlinks=False):
                total += e.stat(follow_symlinks=False).st_size
    return total


def _shared_bytes(stage_root: Path) -> int:
    """The files beside a stage's key dirs (generate's pool and soft-label store)."""
    try:
        return sum(f.stat().st_size for f in stage_root.iterdir() if f.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0


def status(cfg: Config, *, verify: bool = False) -> list[StageStatus]:
    """Every stage's state, in each chain the config asks for; `verify`: their sha256s too."""
    out: list[StageStatus] = []
    targets = [name for name in STAGES if hook(stage_module(name), "ends_chain")(cfg)]
    labels = list(dict.fromkeys(step.label for t in targets for step in chain(cfg, t)))
    plans: dict[str, StagePlan] = {}
    errors: dict[str, str] = {}
    try:
        for t in targets:
            plans.update(plan(cfg, t))
    except UserError as e:
        # Stage by stage: a student that cannot be keyed leaves generate and filter readable.
        for target in STAGES:
            try:
                plans.update(plan(cfg, target))
            except UserError:
                break
        for label in labels:
            if label not in plans:
                errors[label] = f"cannot compute its key: {e}"
    shown: set[str] = set()
    for name in labels:
        p = plans.get(name)
        if p is None:
            out.append(StageStatus(name, "error", note=errors.get(name, "")))
            continue
        if p.key in shown:  # a step that comes out the same as one listed already
            continue
        shown.add(p.key)
        st = StageStatus(name, "missing", p.key[:12], str(p.dir))
        st.disk = dir_bytes(p.dir) if p.dir.is_dir() else None
        st.shared_disk = _shared_bytes(p.dir.parent)
        # sizes only, unless verifying: a row count reads gigabytes at a million samples
        m, problems = check_complete(p, deep=verify, rows=verify)
        if m:
            st.state, st.rows, st.seconds, st.ended = (
                "complete",
                manifest_rows(m),
                m.get("seconds"),
                m.get("ended", ""),
            )
        elif problems:
            st.state = "corrupt"
            st.note = "; ".join(problems[:3]) + "; a rerun rebuilds it"
        elif p.dir.exists() and not p.dir.is_dir():
            st.state = "corrupt"
            st.note = "a file stands where the stage dir should be; move it away"
        elif p.dir.is_dir():
            st.state = "partial"
            st.note = _partial_note(p)
        else:
            others = [d for d in (run_dir(cfg) / p.stage).glob("*") if (d / MANIFEST).is_file()]
            if others:
                st.state = "stale"
                st.note = f"{len(others)} complete dir(s) for other configs"
        out.append(st)
    return out


def _partial_note(p: StagePlan) -> str:
    return stage_module(p.stage).progress(p.cfg, p.dir)
