"""A results page pins what it reports: a commit, a date and a command that reproduces it."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

PAGES = sorted(p for p in (ROOT / "docs" / "results").glob("*.md") if p.name != "index.md")
COMMIT = re.compile(r"`[0-9a-f]{7,40}`")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_results_page_names_commit_date_and_command(page) -> None:
    text = page.read_text(encoding="utf-8")
    assert COMMIT.search(text), f"{page.name}: no commit"
    assert DATE.search(text), f"{page.name}: no date"
    assert "```bash" in text, f"{page.name}: no command that reproduces it"


def test_the_results_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "results" / "index.md").read_text(encoding="utf-8")
    assert [p.name for p in PAGES if f"]({p.name})" not in index] == []
