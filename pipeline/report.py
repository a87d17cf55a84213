"""What the CLI prints: a line per stage as it finishes, a summary at the end, `status`."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipeline.config import Config, describe

# Piped output (CI logs, `| tee`) gets a wide table rather than rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def epochs_auto_text(auto: dict[str, Any]) -> str:
    """How many epochs train.epochs: auto ran and why it stopped (stages/train/epochs.py's
    `epochs_auto` stats), in the words the model card and the HTML report both use."""
    ran = auto.get("ran")
    ran_text = f"{ran:g}" if isinstance(ran, (int, float)) else str(ran)
    stop = auto.get("why") or "the schedule ran to its end"
    most = auto.get("max_epochs")
    return f"trained {ran_text} epochs of at most {most} (train.epochs: auto): {stop}"


def _fmt_rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k.removesuffix('.jsonl')} {v:,}" for k, v in rows.items()) or "-"


def print_stage_line(r: Any) -> None:
    # Paths and names are user text: '[' in them must print as itself, not as rich markup.
    console.print(
        f"[bold]{escape(r.name)}[/]: {r.status} in {r.seconds:.1f}s  "
        f"({escape(_fmt_rows(r.rows))})  -> {escape(str(r.dir))}"
    )


def print_summary(cfg: Config, results: list[Any], seconds: float) -> None:
    """The run's table, then each stage's own summary: of the stages that ran, and of the
    target (the last) even when cached, so `distill eval` always ends with the results."""
    from pipeline.runner import stage_module

    t = Table(title=Text(f"run '{cfg.run}' ({seconds:.1f}s)"), title_justify="left")
    for col in ("stage", "status", "seconds", "rows"):
        t.add_column(col)
    t.add_column("dir", overflow="fold")
    for r in results:
        t.add_row(
            Text(r.name), r.status, f"{r.seconds:.1f}", Text(_fmt_rows(r.rows)), Text(str(r.dir))
        )
    console.print(t)
    for r in results:
        if (r.status == "ran" or r is results[-1]) and r.status != "joined":
            text = stage_module(r.stage).summary(r.stats, r.dir)
            if text:
                console.print(Text(f"{r.name}:", style="bold"))
                console.print(Text(text))


def print_status(cfg: Config, rows: list[Any]) -> None:
    from pipeline.runner import run_dir
    from pipeline.status import dir_bytes
    from pipeline.taskfacts import task_facts

    total = _size(dir_bytes(run_dir(cfg)))
    t = Table(
        title=Text(f"run '{cfg.run}' in {cfg.runs_dir}/{cfg.run} ({total} on disk, all keys)"),
        title_justify="left",
    )
    for col in ("stage", "state", "key", "rows", "disk", "seconds", "finished", "note"):
        t.add_column(col)
    colors = {
        "complete": "green",
        "partial": "yellow",
        "stale": "magenta",
        "error": "red",
        "corrupt": "red",
    }
    for s in rows:
        t.add_row(
            s.name,
            Text(s.state, style=colors.get(s.state, "white")),
            s.key,
            Text(_fmt_rows(s.rows)),
            Text(_disk(s)),
            f"{s.seconds:.1f}" if s.seconds is not None else "",
            s.ended,
            Text(s.note),
        )
    console.print(t)
    console.print(Text(task_facts(cfg.task, cfg.cache_dir).line()))  # the splits, kept: no read


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _disk(s: Any) -> str:
    """The stage dir's bytes, plus what its keys share (the pool) where there is any."""
    own = "" if s.disk is None else _size(s.disk)
    if s.shared_disk:
        return f"{own or '-'} + {_size(s.shared_disk)} shared"
    return own


def print_config(cfg: Config) -> None:
    """Every field: dotted key, type, default, value if it differs, in a key or runtime, doc."""
    fields = describe(cfg)
    width = max(len(f.key) for f in fields)
    section = ""
    lines = [
        "Every config field (YAML section.key, or key.sub=value on the command line).",
        "'key' fields are part of the cache key of the stages that read them; 'runtime' ones",
        "only change how work is done.",
    ]
    for f in fields:
        top = f.key.split(".")[0] if "." in f.key else ""
        if top != section:
            section = top
            lines.append(f"\n{section}:")
        value = "" if f.value == f.default else f"  (now {f.value!r})"
        lines.append(
            f"  {f.key:<{width}}  {'key' if f.in_key else 'runtime':<7}  {f.type}  "
            f"default {f.default!r}{value}"
        )
        lines.append(f"  {'':<{width}}  {f.doc}")
    print("\n".join(lines))


def machine_lines(cfg: Config) -> list[str]:
    """The startup check of a command that serves or trains: the machine found, the dtype each
    engine and the trainer will take on it, the cores used; so a user whose machine is slow
    learns it in the first second, not after an hour."""
    from pipeline.hardware import choose_dtype, detect

    hw = detect()
    parts = []
    if cfg.lead_teacher().urls():
        parts.append("teacher at its endpoint")
    else:
        parts.append(f"teacher {_dtype_text(choose_dtype(cfg.lead_teacher().serve.dtype, hw))}")
    parts.append(f"students {_dtype_text(choose_dtype(cfg.eval.serve.dtype, hw))}")
    bf16 = cfg.train.bf16 and hw.native_bf16
    parts.append(f"training in {'bf16 autocast' if bf16 else 'float32'}")
    return [f"machine: {hw.describe()}", f"  {', '.join(parts)}"]


def _dtype_text(choice: Any) -> str:
    return f"in {choice.dtype}" + (" (emulated here: slow)" if choice.warning else "")
