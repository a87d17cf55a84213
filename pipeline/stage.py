"""The stage contract: what a stage module provides, and all the runner and the CLI know of it.

A stage is a package `stages/<NAME>/` whose `__init__` provides the members of `Stage` below
(tests/pipeline/test_stage.py checks each one). The runner keys it, skips it when its
manifest and outputs say it is complete, takes its locks, runs it and writes its manifest; the
CLI prints its HELP and its summary. Nothing else about a stage is known outside it.

Keys. A stage's key is sha256 over its NAME, VERSION, `key_parts(cfg)` (the semantic config it
reads, plus content hashes of what it reads besides: model weights, templates, data) and the keys
of its upstream stages. Runtime knobs (concurrency, endpoints, threads) are never in a key.

Outputs. `run(cfg, ctx)` reads only its inputs (`ctx.inputs`: upstream stage dirs by label,
with their keys and manifests, which the runner has read and checked), writes only under
`ctx.out`, and returns stats; the runner then writes `manifest.json` last, listing every name in
OUTPUTS with its size, row count and sha256. A stage's own key and its inputs' keys come in
`ctx` (a card names them): a stage never recomputes a key.

Optional members (`hook` gives their defaults, so a stage with nothing to say writes nothing):
`extra_inputs(cfg)` (default none), `locks(cfg, out)` (none besides the stage dir's own),
`export(ctx: ExportContext)` (no part in `distill export`), `follow_up(cfg, stats)` (nothing:
a stage that returns a config there, as sweep returns the chosen one, has the runner run that
config's chain to eval once it is done), `pick_shard(flag)` and `shard(cfg, out, shard)` (no
`--shard`): generate's pick the shard from `--shard i/N` or Slurm's array variables (None for a
plain run), then write that share beside the stage dir and return stats with "shard",
"questions", "samples", "requested"; no manifest is written, the plain run merges the shards.
`follows(cfg)` and `follow(cfg, ctx)` (no): true where this machine joins another machine's run
of the stage (train on machine rank > 0), which the runner then hands to `follow` with no lock
taken and no manifest written, once the stage's inputs are complete. `cost_plan(cfg, out,
pilot)` (no `distill plan`: generate's alone). `ends_chain(cfg)` (no): true where the stage ends
a chain this config asks for, which `distill status` lists with all it needs (eval always;
seeds and sweep where the config has seeds or a grid).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipeline.config import Config

STAGES = ("generate", "filter", "train", "eval", "seeds", "sweep")  # the stages, in chain order


@dataclass(frozen=True)
class KeyParts:
    config: dict[str, Any]  # the semantic config the output depends on
    extra: dict[str, str] = field(default_factory=dict)  # hashes of weights, templates, data


@dataclass(frozen=True)
class ExtraInput:
    """One more keyed run a stage needs as input, of another stage with another config
    (eval's answer-only ablation: the train stage again, on answer-only completions)."""

    label: str  # the input's name in `inputs`, and in `distill status`
    stage: str  # the stage that makes it
    cfg: Config


@dataclass(frozen=True)
class RunContext:
    """What the runner hands a stage's `run`: where to write, and its inputs with their keys."""

    out: Path  # the stage dir: everything the stage writes goes under it
    key: str  # this stage's key ("unknown" when run outside the runner)
    inputs: dict[str, Path] = field(default_factory=dict)  # input label -> its stage dir
    input_keys: dict[str, str] = field(default_factory=dict)  # input label -> its key
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # input label -> manifest

    def keys(self, name: str) -> dict[str, str]:
        """Every input's key and this stage's own under `name`: what a card names."""
        return {**self.input_keys, name: self.key}

    @classmethod
    def of(cls, inputs: dict[str, Path], out: Path) -> RunContext:
        """A context for running a stage outside the runner (tests, scripts): the inputs' keys
        and manifests as their dirs hold them, "unknown" where a dir has none."""
        import json

        manifests: dict[str, dict[str, Any]] = {}
        for label, d in inputs.items():
            with_key = Path(d) / "manifest.json"
            try:
                manifests[label] = json.loads(with_key.read_text())
            except (OSError, ValueError):
                continue
        keys = {label: str(manifests.get(label, {}).get("key", "unknown")) for label in inputs}
        return cls(Path(out), "unknown", {k: Path(v) for k, v in inputs.items()}, keys, manifests)


@dataclass(frozen=True)
class ExportContext:
    """What `distill export` hands a stage's optional `export(ctx) -> str` hook: the stage's dir
    for the config given, its manifest (None when it is not complete: `problems` says why when
    it is corrupt), and the export's root (a temporary dir, renamed into place once every stage
    wrote its part). The hook writes its part under `dest`, or raises UserError when the export
    cannot go on without it, and returns a line for the console ("" for nothing to say)."""

    dir: Path
    manifest: dict[str, Any] | None
    problems: tuple[str, ...]
    dest: Path
    dtype: str  # the student's weights: auto (as trained), bfloat16, float16, float32
    push: str  # the Hub repo the export will be pushed to, "" for none


@runtime_checkable
class Stage(Protocol):
    NAME: str  # the package name, and the CLI command
    VERSION: int  # bump when the same config would now give other output
    OUTPUTS: tuple[str, ...]  # files and dirs under the stage dir, listed in the manifest
    UPSTREAM: tuple[str, ...]  # stages whose dirs are inputs
    HELP: str  # one line for `distill --help`

    def key_parts(self, cfg: Config) -> KeyParts: ...

    def run(self, cfg: Config, ctx: RunContext) -> dict[str, Any]: ...

    def progress(self, cfg: Config, out: Path) -> str:
        """For `distill status` on a partial stage dir: how far it got."""
        ...

    def summary(self, stats: dict[str, Any], out: Path) -> str:
        """What the CLI prints once after the stage ran: plain text, a few lines."""
        ...


def _no_extra_inputs(cfg: Config) -> list[ExtraInput]:
    return []


def _no_locks(cfg: Config, out: Path) -> list[Path]:
    """Lock files besides the stage dir's own, taken before anything is changed."""
    return []


def _runs_itself(cfg: Config) -> bool:
    """No machine but this one runs the stage: it never joins another's run."""
    return False


def _inside_a_chain(cfg: Config) -> bool:
    """The stage is a step of a longer chain, never the end of one this config asks for."""
    return False


OPTIONAL: dict[str, Any] = {
    "extra_inputs": _no_extra_inputs,
    "locks": _no_locks,
    "export": None,  # no part in `distill export`
    "follow_up": None,  # no chain to run after it
    "pick_shard": None,  # no `--shard i/N`
    "shard": None,
    "follows": _runs_itself,
    "follow": None,
    "cost_plan": None,  # `distill plan`: generate's alone
    "teacher_calls": None,  # `distill plan`: no teacher call after generate's (budget.Calls)
    "ends_chain": _inside_a_chain,
}


def hook(stage: Any, name: str) -> Any:
    """A stage's optional member `name`, or its default (OPTIONAL)."""
    return getattr(stage, name, OPTIONAL[name])


_HELP_LINE = re.compile(r'^HELP = ("[^"\\]*")$', re.M)


def stage_help(name: str) -> str:
    """Stage `name`'s HELP, read from its package's source without importing it: `distill
    --help` must not pay for a stage's imports (the serving stack, numpy). HELP is a one-line
    string literal (tests/pipeline/test_stage.py checks this reading against the module)."""
    spec = importlib.util.find_spec(f"stages.{name}")
    origin = spec.origin if spec else None
    found = _HELP_LINE.search(Path(origin).read_text()) if origin else None
    if found is None:
        raise TypeError(f'stages.{name}: no one-line `HELP = "..."` (pipeline/stage.py)')
    return str(ast.literal_eval(found.group(1)))
