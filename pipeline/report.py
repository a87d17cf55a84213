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


def _fmt_rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k.removesuffix('.jsonl')} {v:,}" for k, v in rows.items()) or "-"


def print_stage_line(r: Any) -> None:
    # Paths and names are user text: '[' in them must print as itself, not as rich markup.
    console.print(
        f"[bold]{escape(r.name)}[/]: {r.status} in {r.seconds:.1f}s  "
        f"({escape(_fmt_rows(r.rows))})  -> {escape(str(r.dir))}"
    )


def _generate_summary(r: Any) -> Table:
    s = r.stats
    t = Table(title="generate", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("questions", f"{s.get('questions', 0):,}")
    t.add_row(
        "samples",
        f"{s.get('samples', 0):,} ({s.get('requested', 0):,} requested, "
        f"{s.get('reused', 0):,} reused)",
    )
    t.add_row("completion tokens", f"{s.get('completion_tokens', 0):,}")
    tps = s.get("tokens_per_second")
    t.add_row("teacher tok/s", f"{tps:,.0f}" if tps else "- (nothing generated)")
    t.add_row("truncation rate", f"{100 * s.get('truncation_rate', 0):.1f}%")
    if s.get("torn_lines_dropped"):
        t.add_row("torn lines dropped", str(s["torn_lines_dropped"]))
    if s.get("damaged_lines_quarantined"):
        t.add_row("damaged pool lines moved to quarantine", str(s["damaged_lines_quarantined"]))
    for url, e in (s.get("endpoints") or {}).items():  # redacted URLs; Text: '[' is not markup
        t.add_row(Text(f"endpoint {url}"), f"{e['served']} served, {e['failures']} failures")
    t.add_row("samples file", Text(str(r.dir / "samples.jsonl")))
    return t


def _filter_summary(r: Any) -> Table:
    s = r.stats
    t = Table(title="filter", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    n = max(1, s.get("input", 0))
    t.add_row(
        "kept", f"{s.get('kept', 0):,} of {s.get('input', 0):,} ({100 * s.get('kept', 0) / n:.1f}%)"
    )
    for reason, c in (s.get("reasons") or {}).items():
        t.add_row(f"  dropped: {reason}", f"{c:,} ({100 * c / n:.1f}%)")
    t.add_row("questions with a kept sample", f"{s.get('questions_with_kept', 0):,}")
    t.add_row("training set", Text(str(r.dir / "kept.jsonl")))
    return t


def _eval_summary(r: Any) -> Text:
    report = r.dir / "report.md"
    if not report.is_file():
        return Text("")
    lines = [ln for ln in report.read_text().splitlines() if not ln.startswith("![")]
    return Text("\n".join(lines))  # Text: brackets in the report are not rich markup


SUMMARIES = {"generate": _generate_summary, "filter": _filter_summary, "eval": _eval_summary}


def print_summary(cfg: Config, results: list[Any], seconds: float) -> None:
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
        fn = SUMMARIES.get(r.name)
        if fn and (r.status == "ran" or r is results[-1]):
            console.print(fn(r))


def print_status(cfg: Config, rows: list[Any]) -> None:
    t = Table(title=Text(f"run '{cfg.run}' in {cfg.runs_dir}/{cfg.run}"), title_justify="left")
    for col in ("stage", "state", "key", "rows", "seconds", "finished", "note"):
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
            f"{s.seconds:.1f}" if s.seconds is not None else "",
            s.ended,
            Text(s.note),
        )
    console.print(t)


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
