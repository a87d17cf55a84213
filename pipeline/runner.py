"""The stage chain: key every stage, skip the complete ones, run the stale, lock while running."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.cache import MANIFEST, StageLock, read_manifest, stage_key, write_manifest
from pipeline.config import Config

STAGES = ("generate", "filter", "train", "eval")
UPSTREAM: dict[str, tuple[str, ...]] = {
    "generate": (),
    "filter": ("generate",),
    "train": ("filter",),
    "eval": ("filter", "train"),
}


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(f"stages.{name}")


@dataclass
class StagePlan:
    name: str
    key: str
    dir: Path
    upstream: dict[str, str]
    config: dict[str, Any]


@dataclass
class StageResult:
    name: str
    status: str  # cached | ran
    seconds: float
    dir: Path
    stats: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def run_dir(cfg: Config) -> Path:
    return Path(cfg.runs_dir) / cfg.run


def plan(cfg: Config, upto: str) -> dict[str, StagePlan]:
    """Keys for `upto` and everything it depends on, in chain order."""
    plans: dict[str, StagePlan] = {}
    for name in STAGES[: STAGES.index(upto) + 1]:
        mod = stage_module(name)
        parts = mod.key_parts(cfg)
        upstream = {u: plans[u].key for u in UPSTREAM[name]}
        key = stage_key(name, mod.VERSION, parts["config"], upstream, parts.get("extra"))
        plans[name] = StagePlan(
            name, key, run_dir(cfg) / name / key[:12], upstream, parts["config"]
        )
    return plans


def is_complete(p: StagePlan) -> dict[str, Any] | None:
    m = read_manifest(p.dir)
    return m if m and m.get("key") == p.key else None


def _rows(manifest: dict[str, Any]) -> dict[str, int]:
    return {k: v["rows"] for k, v in manifest.get("outputs", {}).items() if "rows" in v}


def run_stage(cfg: Config, p: StagePlan, plans: dict[str, StagePlan], force: bool) -> StageResult:
    t0 = time.monotonic()
    done = None if force else is_complete(p)
    if done:
        return StageResult(
            p.name, "cached", time.monotonic() - t0, p.dir, done["stats"], _rows(done)
        )
    mod = stage_module(p.name)
    p.dir.mkdir(parents=True, exist_ok=True)
    with StageLock(p.dir / ".lock"):
        done = None if force else is_complete(p)  # another run may have finished it meanwhile
        if done:
            return StageResult(
                p.name, "cached", time.monotonic() - t0, p.dir, done["stats"], _rows(done)
            )
        (p.dir / MANIFEST).unlink(missing_ok=True)
        started = time.time()
        inputs = {u: plans[u].dir for u in UPSTREAM[p.name]}
        stats = mod.run(cfg, inputs, p.dir)
        manifest = write_manifest(
            p.dir,
            stage=p.name,
            key=p.key,
            config=p.config,
            inputs={u: plans[u].key for u in UPSTREAM[p.name]},
            outputs=list(mod.OUTPUTS),
            stats=stats,
            started=started,
        )
    return StageResult(p.name, "ran", time.monotonic() - t0, p.dir, stats, _rows(manifest))


def run_chain(
    cfg: Config, target: str, *, force: bool = False, on_result: Any = None
) -> list[StageResult]:
    """Run `target` and whatever it needs that is not cached. `force` reruns `target` only."""
    plans = plan(cfg, target)
    results = []
    for name, p in plans.items():
        r = run_stage(cfg, p, plans, force and name == target)
        results.append(r)
        if on_result:
            on_result(r)
    return results


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


def status(cfg: Config) -> list[StageStatus]:
    out: list[StageStatus] = []
    try:
        plans = plan(cfg, STAGES[-1])
    except Exception as e:  # noqa: BLE001 - status must show what it can
        plans = {}
        note = f"cannot compute keys: {e}"
    for name in STAGES:
        p = plans.get(name)
        if p is None:
            out.append(StageStatus(name, "error", note=note))
            continue
        st = StageStatus(name, "missing", p.key[:12], str(p.dir))
        m = read_manifest(p.dir)
        if m and m.get("key") == p.key:
            st.state, st.rows, st.seconds, st.ended = (
                "complete",
                _rows(m),
                m.get("seconds"),
                m.get("ended", ""),
            )
        elif p.dir.exists():
            st.state = "partial"
            st.note = _partial_note(cfg, name, p)
        else:
            others = [d for d in (run_dir(cfg) / name).glob("*") if read_manifest(d)]
            if others:
                st.state = "stale"
                st.note = f"{len(others)} complete dir(s) for other configs"
        out.append(st)
    return out


def _partial_note(cfg: Config, name: str, p: StagePlan) -> str:
    fn = getattr(stage_module(name), "progress", None)
    return fn(cfg, p.dir) if fn else "started, not finished"
