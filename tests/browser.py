"""Headless Chromium for the report's browser tests: Debian's `chromium` package driven by
Playwright for Python, launched as the system browser, so nothing is downloaded at test time
(scripts/test.sh installs the package where apt can). A machine without it fails these tests
with one line saying what to install, never a Playwright traceback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Chromium on a closed network: without the background-networking flags it keeps dialling
# Google's hosts and logs each refusal; as root it needs --no-sandbox.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The system browser's path, or the test fails with the one line that says what to do."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "no Chromium: the report's browser tests need Debian's chromium package "
            "(apt-get install chromium; scripts/test.sh installs it where it can)",
            pytrace=False,
        )
    return found


@contextmanager
def opened(path: Path, timeout_s: float = 30) -> Iterator[tuple[Any, list[str]]]:
    """The report at `path` open in headless Chromium, ready (its script has set
    data-ready-ms on <body>), with the console errors and page errors seen so far."""
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("no playwright: pip install playwright (a dev dependency)", pytrace=False)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.resolve().as_uri())
            page.wait_for_function(
                "document.body.dataset.readyMs !== undefined", timeout=timeout_s * 1000
            )
            yield page, errors
        finally:
            browser.close()


def table(page: Any, selector: str) -> list[list[str]]:
    """The text of each cell of the first table under `selector`, row by row (header included)."""
    return page.eval_on_selector(
        f"{selector} table",
        "t => Array.from(t.rows, r => Array.from(r.cells, c => c.textContent.trim()))",
    )


SECTIONS = ("chain", "funnel", "samples", "training", "eval")


def screenshots(page: Any, out: Path, prefix: str = "report-", most_px: int = 1400) -> list[Path]:
    """One PNG per section of the open report, `out/<prefix><section>.png`: the section's top
    `most_px` pixels (the eval section's side-by-side answers run to metres otherwise)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for section in SECTIONS:
        path = out / f"{prefix}{section}.png"
        x, y, w, h = page.eval_on_selector(  # page coordinates, as full_page clips by
            f"#{section}",
            "e => { const r = e.getBoundingClientRect();"
            " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; }",
        )
        clip = {"x": x, "y": y, "width": w, "height": min(h, most_px)}
        page.screenshot(path=str(path), clip=clip, full_page=True)
        paths.append(path)
    return paths
