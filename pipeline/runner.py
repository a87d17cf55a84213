"""The stage chain: key every stage, skip the complete ones, run the stale, lock while running."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cache import (
    LOCK,
    MANIFEST,
    ManifestError,
    StageLock,
    read_manifest,
    stage_key,
    verify_outputs,
    write_manifest,
)
from pipeline.config import Config, expand
from pipeline.errors import UserError
from pipeline.stage import STAGES, RunContext, Stage, hook


@dataclass(frozen=True)
class Step:
    label: str  # its name in the chain: a stage name, "<extra input>/<stage>" in a sub-chain
    stage: str  # the stage that runs it
    cfg: Config
    inputs: tuple[tuple[str, str], ...]  # (name in the stage's `inputs`, label of the step)


def stage_module(name: str) -> Stage:
    """The stage package `stages.<name>`, checked against the contract. Only the names in
    STAGES load: a helper module (stages.filter.dedup, stages.shared) is never taken for one."""
    if name not in STAGES:
        raise ValueError(f"{name!r} is not a stage (stages: {', '.join(STAGES)})")
    mod = importlib.import_module(f"stages.{name}")
    if not isinstance(mod, Stage) or mod.NAME != name:
        raise TypeError(f"stages.{name} does not provide the stage contract (pipeline/stage.py)")
    return mod


def chain(cfg: Config, upto: str, prefix: str = "") -> list[Step]:
    """The steps `upto` needs, in order: each stage after its upstream stages, and before a
    stage the whole chain of each extra input it declares (that stage under another config),
    labelled "<extra input>/<stage>". Steps that come out the same (same stage and key) are
    run once: `plan` makes them one."""
    if upto not in STAGES:
        raise ValueError(f"{upto!r} is not a stage")
    steps: list[Step] = []
    needed = _needed(upto)
    for name in STAGES[: STAGES.index(upto) + 1]:
        if name != upto and name not in needed:
            continue
        mod = stage_module(name)
        extras = hook(mod, "extra_inputs")(cfg)
        for x in extras:
            steps += chain(x.cfg, x.stage, prefix=f"{prefix}{x.label}/")
        inputs = tuple((u, prefix + u) for u in mod.UPSTREAM)
        inputs += tuple((x.label, f"{prefix}{x.label}/{x.stage}") for x in extras)
        steps.append(Step(prefix + name, name, cfg, inputs))
    return steps


def _needed(upto: str) -> set[str]:
    """The stages `upto` reads, directly or not (a stage with no upstream needs nothing)."""
    out: set[str] = set()
    todo = list(stage_module(upto).UPSTREAM)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += stage_module(name).UPSTREAM
    return out


@dataclass
class StagePlan:
    name: str  # the first label it was planned under: a stage, or "<extra input>/<stage>"
    stage: str  # stage module
    cfg: Config
    key: str
    dir: Path
    upstream: dict[str, str]  # input name -> that input's key
    config: dict[str, Any]
    inputs: dict[str, Path] = field(default_factory=dict)  # input name -> its stage dir


@dataclass
class StageResult:
    name: str
    stage: str
    status: str  # cached | ran
    seconds: float
    dir: Path
    stats: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def run_dir(cfg: Config) -> Path:
    return expand(cfg.runs_dir, "runs_dir") / cfg.run


def plan(cfg: Config, upto: str) -> dict[str, StagePlan]:
    """Keys for `upto` and everything it depends on, in chain order, by label. Labels whose
    step comes out the same (stage and key) share one StagePlan: it runs once."""
    plans: dict[str, StagePlan] = {}
    by_key: dict[str, StagePlan] = {}
    for step in chain(cfg, upto):
        mod = stage_module(step.stage)
        parts = mod.key_parts(step.cfg)
        upstream = {name: plans[label].key for name, label in step.inputs}
        key = stage_key(step.stage, mod.VERSION, parts.config, upstream, parts.extra)
        if key not in by_key:
            d = run_dir(cfg) / step.stage / key[:12]
            inputs = {name: plans[label].dir for name, label in step.inputs}
            by_key[key] = StagePlan(
                step.label, step.stage, step.cfg, key, d, upstream, parts.config, inputs
            )
        plans[step.label] = by_key[key]
    return plans


def unique(plans: dict[str, StagePlan]) -> list[StagePlan]:
    """Each planned stage once, in chain order."""
    return list({id(p): p for p in plans.values()}.values())


def check_complete(
    p: StagePlan, *, deep: bool = False, rows: bool = True
) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest, []) when `p` is complete: a manifest for this key whose outputs all match it
    (verify_outputs: sizes, `rows` row counts, `deep` sha256s).
    (None, problems) when the dir claims completion but its files say otherwise (corrupt);
    (None, []) when it is partial or missing."""
    try:
        m = read_manifest(p.dir)
    except ManifestError as e:
        return None, [str(e)]
    if m is None or m.get("key") != p.key:
        return None, []
    problems = verify_outputs(p.dir, m, deep=deep, rows=rows)
    return (None, problems) if problems else (m, [])


def manifest_rows(manifest: dict[str, Any]) -> dict[str, int]:
    return {k: v["rows"] for k, v in manifest.get("outputs", {}).items() if "rows" in v}


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((q for q in [path, *path.parents] if q.exists() and not q.is_dir()), path)
        raise UserError(
            f"{blocker} is a file where distill keeps a directory; move it away and rerun"
        ) from None


def stage_locks(p: StagePlan) -> list[StageLock]:
    """The stage dir's lock, then the shared ones the stage names (generate: the pool's)."""
    extra = hook(stage_module(p.stage), "locks")(p.cfg, p.dir)
    return [StageLock(p.dir / LOCK), *(StageLock(x) for x in extra)]


def _cached(p: StagePlan, manifest: dict[str, Any], t0: float) -> StageResult:
    stats = manifest.get("stats") or {}
    return StageResult(
        p.name, p.stage, "cached", time.monotonic() - t0, p.dir, stats, manifest_rows(manifest)
    )


def run_stage(p: StagePlan, force: bool, verify: bool = False) -> StageResult:
    """Run `p` unless it is complete; `verify` also checks the outputs' sha256s."""
    t0 = time.monotonic()
    done = None if force else check_complete(p, deep=verify)[0]
    if done:
        return _cached(p, done, t0)
    mod = stage_module(p.stage)
    _make_dir(p.dir)
    if (p.dir / MANIFEST).exists() and not (p.dir / MANIFEST).is_file():
        raise UserError(f"{p.dir / MANIFEST} is not a file; move it away and rerun")
    with contextlib.ExitStack() as held:
        # Every lock before any delete: a run refused by a lock changes nothing.
        for lock in stage_locks(p):
            held.enter_context(lock)
        done, problems = (None, []) if force else check_complete(p, deep=verify)
        if done:  # another run finished it meanwhile
            return _cached(p, done, t0)
        if problems:
            print(f"{p.name}: {p.dir} is corrupt ({problems[0]}); rebuilding it", file=sys.stderr)
        (p.dir / MANIFEST).unlink(missing_ok=True)
        if force:  # from scratch: no leftover checkpoint or partial output is resumed
            for child in p.dir.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        started = time.time()
        stats = mod.run(p.cfg, _context(p))
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
    return StageResult(
        p.name, p.stage, "ran", time.monotonic() - t0, p.dir, stats, manifest_rows(manifest)
    )


def _context(p: StagePlan) -> RunContext:
    """`p`'s run context: its key, and its inputs' dirs, keys and manifests (each input ran or
    was found complete just before, in chain order)."""
    manifests = {}
    for name, d in p.inputs.items():
        m = read_manifest(d)
        if m is None:  # the chain runs inputs first: a missing manifest is a bug, not a user's
            raise RuntimeError(f"{p.name}: input {name} at {d} has no manifest")
        manifests[name] = m
    return RunContext(p.dir, p.key, dict(p.inputs), dict(p.upstream), manifests)


def run_chain(
    cfg: Config, target: str, *, force: bool = False, verify: bool = False, on_result: Any = None
) -> list[StageResult]:
    """Run `target` and whatever it needs that is not cached. `force` reruns `target` only;
    `verify` rebuilds any stage whose outputs' sha256s differ from its manifest."""
    if hook(stage_module(target), "follows")(cfg):
        return [_follow(cfg, target, on_result)]
    results = []
    for p in unique(plan(cfg, target)):
        r = run_stage(p, force and p.name == target, verify)
        results.append(r)
        if on_result:
            on_result(r)
    then = hook(stage_module(target), "follow_up")
    if then is not None:  # e.g. sweep: the chosen settings' chain, evaluated once
        chosen = then(cfg, results[-1].stats)
        results += run_chain(chosen, "eval", verify=verify, on_result=on_result)
    return results


def run_shard(cfg: Config, name: str, flag: str | None) -> dict[str, Any] | None:
    """Stage `name`'s share for one Slurm array task, when `flag` (`--shard i/N`) or the task's
    environment names one (the stage's `pick_shard`), through its `shard` hook; None when no
    shard applies (a plain run). The key dir is made, so `distill status` shows it partial."""
    mod = stage_module(name)
    pick, run = hook(mod, "pick_shard"), hook(mod, "shard")
    if pick is None or run is None:
        if flag is not None:
            raise UserError(f"{name} has no shards; --shard is for generate")
        return None
    which = pick(flag)  # a bad --shard is refused here, before any key is computed
    if which is None:
        return None
    p = plan(cfg, name)[name]
    _make_dir(p.dir)
    return run(cfg, p.dir, which)


def cost_plan(cfg: Config, pilot: int) -> str:
    """`distill plan`: the stage with a `cost_plan` hook (generate), under its locks, given
    the teacher calls every later stage of the chain makes at most (`teacher_calls` hooks:
    on-policy scores, eval's teacher answers and draft scores)."""
    mods = [stage_module(name) for name in STAGES]
    end = next((i for i, m in enumerate(mods) if hook(m, "ends_chain")(cfg)), len(mods) - 1)
    mods = mods[: end + 1]  # the chain `distill run` runs
    later = [c for m in mods if (calls := hook(m, "teacher_calls")) for c in calls(cfg)]
    mod = next(m for m in mods if hook(m, "cost_plan") is not None)
    p = plan(cfg, mod.NAME)[mod.NAME]
    with contextlib.ExitStack() as held:
        for path in hook(mod, "locks")(cfg, p.dir):
            held.enter_context(StageLock(path))
        return hook(mod, "cost_plan")(cfg, p.dir, pilot, later)


def _follow(cfg: Config, target: str, on_result: Any = None) -> StageResult:
    """This machine joins another's run of `target` (train on machine rank > 0): its inputs
    must be complete already (it runs none of them), and it takes no lock and writes no
    manifest: the machine that runs the stage does both."""
    t0 = time.monotonic()
    plans = plan(cfg, target)
    p = plans[target]
    done = check_complete(p)[0]
    if done:  # rank 0 finds it cached too and starts nothing to join
        r = _cached(p, done, t0)
        if on_result:
            on_result(r)
        return r
    for name, d in p.inputs.items():
        ip = next(q for q in plans.values() if q.dir == d)
        if check_complete(ip)[0] is None:
            raise UserError(
                f"{target}: its input {name} ({d}) is not complete; run `distill {ip.stage}` "
                "first (machine rank 0 does, before the machines train together)"
            )
    hook(stage_module(target), "follow")(cfg, _context(p))
    r = StageResult(p.name, p.stage, "joined", time.monotonic() - t0, p.dir)
    if on_result:
        on_result(r)
    return r
