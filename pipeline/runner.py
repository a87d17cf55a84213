"""The stage chain: key every stage, skip the complete ones, run the stale, lock while running."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.cache import LOCK, MANIFEST, StageLock, read_manifest, stage_key, write_manifest
from pipeline.config import Config

STAGES = ("generate", "filter", "train", "eval")
ABLATION = "train_answer_only"  # the train stage again, on answer-only completions


def chain(cfg: Config, upto: str) -> list[tuple[str, str, Config, tuple[str, ...]]]:
    """(label, stage module, config, upstream labels) for `upto` and what it needs, in order."""
    ablation = "student_answer_only" in cfg.eval.models
    steps = [
        ("generate", "generate", cfg, ()),
        ("filter", "filter", cfg, ("generate",)),
        ("train", "train", cfg, ("filter",)),
    ]
    if ablation and upto == "eval":
        variant = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, answer_only=True))
        steps.append((ABLATION, "train", variant, ("filter",)))
    steps.append(("eval", "eval", cfg, ("filter", "train", *((ABLATION,) if ablation else ()))))
    labels = [s[0] for s in steps]
    return steps[: labels.index(upto) + 1] if upto in labels else steps


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(f"stages.{name}")


@dataclass
class StagePlan:
    name: str  # label in the chain (train_answer_only is a second train)
    stage: str  # stage module
    cfg: Config
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
    for label, stage, scfg, ups in chain(cfg, upto):
        mod = stage_module(stage)
        parts = mod.key_parts(scfg)
        upstream = {u: plans[u].key for u in ups}
        key = stage_key(stage, mod.VERSION, parts["config"], upstream, parts.get("extra"))
        plans[label] = StagePlan(
            label, stage, scfg, key, run_dir(cfg) / stage / key[:12], upstream, parts["config"]
        )
    return plans


def is_complete(p: StagePlan) -> dict[str, Any] | None:
    m = read_manifest(p.dir)
    return m if m and m.get("key") == p.key else None


def _rows(manifest: dict[str, Any]) -> dict[str, int]:
    return {k: v["rows"] for k, v in manifest.get("outputs", {}).items() if "rows" in v}


def run_stage(p: StagePlan, plans: dict[str, StagePlan], force: bool) -> StageResult:
    t0 = time.monotonic()
    done = None if force else is_complete(p)
    if done:
        return StageResult(
            p.name, "cached", time.monotonic() - t0, p.dir, done["stats"], _rows(done)
        )
    mod = stage_module(p.stage)
    p.dir.mkdir(parents=True, exist_ok=True)
    with StageLock(p.dir / ".lock"):
        done = None if force else is_complete(p)  # another run may have finished it meanwhile
        if done:
            return StageResult(
                p.name, "cached", time.monotonic() - t0, p.dir, done["stats"], _rows(done)
            )
        (p.dir / MANIFEST).unlink(missing_ok=True)
        if force:  # from scratch: no leftover checkpoint or partial output is resumed
            for child in p.dir.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        started = time.time()
        inputs = {u: plans[u].dir for u in p.upstream}
        stats = mod.run(p.cfg, inputs, p.dir)
        manifest = write_manifest(
            p.dir,
            stage=p.stage,
            key=p.key,
            config=p.config,
            inputs=p.upstream,
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
        r = run_stage(p, plans, force and name == target)
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
        plans = plan(cfg, "eval")
    except Exception as e:  # noqa: BLE001 - status must show what it can
        plans = {}
        note = f"cannot compute keys: {e}"
    for name in plans or STAGES:
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
            st.note = _partial_note(p)
        else:
            others = [d for d in (run_dir(cfg) / p.stage).glob("*") if read_manifest(d)]
            if others:
                st.state = "stale"
                st.note = f"{len(others)} complete dir(s) for other configs"
        out.append(st)
    return out


def _partial_note(p: StagePlan) -> str:
    fn = getattr(stage_module(p.stage), "progress", None)
    return fn(p.cfg, p.dir) if fn else "started, not finished"
