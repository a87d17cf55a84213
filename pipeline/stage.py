"""The stage contract: what a stage module provides, and all the runner and the CLI know of it.

A stage is a package `stages/<NAME>/` whose `__init__` provides the members of `Stage` below
(tests/unit/test_stage_contract.py checks each one). The runner keys it, skips it when its
manifest and outputs say it is complete, takes its locks, runs it and writes its manifest; the
CLI prints its HELP and its summary. Nothing else about a stage is known outside it.

Keys. A stage's key is sha256 over its NAME, VERSION, `key_parts(cfg)` (the semantic config it
reads, plus content hashes of what it reads besides: model weights, templates, data) and the keys
of its upstream stages. Runtime knobs (concurrency, endpoints, threads) are never in a key.

Outputs. `run(cfg, inputs, out)` reads only its inputs (upstream stage dirs, by label), writes
only under `out`, and returns stats; the runner then writes `manifest.json` last, listing every
name in OUTPUTS with its size, row count and sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipeline.config import Config


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


@runtime_checkable
class Stage(Protocol):
    NAME: str  # the package name, and the CLI command
    VERSION: int  # bump when the same config would now give other output
    OUTPUTS: tuple[str, ...]  # files and dirs under the stage dir, listed in the manifest
    UPSTREAM: tuple[str, ...]  # stages whose dirs are inputs
    HELP: str  # one line for `distill --help`

    def key_parts(self, cfg: Config) -> KeyParts: ...

    def extra_inputs(self, cfg: Config) -> list[ExtraInput]: ...

    def locks(self, cfg: Config, out: Path) -> list[Path]:
        """Lock files besides the stage dir's own, taken before anything is changed."""
        ...

    def run(self, cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]: ...

    def progress(self, cfg: Config, out: Path) -> str:
        """For `distill status` on a partial stage dir: how far it got."""
        ...

    def summary(self, stats: dict[str, Any], out: Path) -> str:
        """What the CLI prints once after the stage ran: plain text, a few lines."""
        ...
