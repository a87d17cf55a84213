"""`distill report`: one self-contained HTML file per run, `runs/<run>/report.html`.

It shows the chain (each stage's key, state, time, rows, tokens and cost, the split sizes), the
filter funnel (samples in, dropped per reason, kept; per teacher when there are several), a
sample browser (kept and rejected samples, searched by text or question id; a question's page
with its gold answer and every sample written for it), the training curves with the selected
step and why, and the eval table with its intervals, McNemar tests and the questions on which
teacher and student disagree, both answers side by side. A stage that has not run is shown
"not run".

The file opens from disk with no server and no network: the charts are inline SVG drawn in
Python (svg.py); the samples are embedded as gzip + base64 and decompressed by the browser's
own DecompressionStream, then rendered 50 rows a page.

Size bound: the page around the data is under 40 kB; the samples cost their gzip size plus a
third (base64). Each sample's text is cut at 4,000 characters and at most 200,000 samples are
embedded (samples.MAX_CHARS, MAX_SAMPLES), so the file is bounded whatever the run. For
teacher text like the bundled task's, 100,000 samples of ~250 characters make a file under
SIZE_BOUND_100K (8 MB; 5.8 MB measured), read and written in about 2.5 s on 2 cores:
tests/pipeline/test_htmlreport.py builds such a run and checks the bound. The default run's
1,600 samples make about 100 kB.

Modules: collect.py reads the run dir into dataclasses, samples.py the samples into columns,
svg.py draws, embed.py packs data safely into the page, page.py and assets.py render."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from pipeline.htmlreport.collect import RunData, collect, resolve, splits_of
from pipeline.htmlreport.page import render
from pipeline.records import atomic_write_text

REPORT = "report.html"
SIZE_BOUND_100K = 8_000_000  # bytes: the report of 100,000 samples (see the docstring)


def report_path(cfg: Config) -> Path:
    """Where the run's report goes: beside its stage dirs, one per run name (the config last
    reported under that name, whose keys the report's chain table names)."""
    from pipeline.runner import run_dir

    return run_dir(cfg) / REPORT


def gather(cfg: Config) -> RunData:
    """The config's run, read: its stages as `distill status` resolves them."""
    return collect(cfg.run, resolve(cfg), splits_of(cfg))


def write_report(cfg: Config, path: Path | None = None) -> Path:
    """Write the report of `cfg`'s run (atomically: a reader never sees half a file)."""
    path = path or report_path(cfg)
    atomic_write_text(path, render(gather(cfg)))
    return path


__all__ = ["REPORT", "SIZE_BOUND_100K", "gather", "render", "report_path", "write_report"]
