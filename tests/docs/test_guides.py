"""A guide starts from the command a user types: the first thing under its title is a shell
block (checked, like every command in the docs, by test_doc_commands.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT

GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


def test_there_are_guides() -> None:
    assert len(GUIDES) >= 12


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_a_guide_starts_from_a_command(page) -> None:
    lines = [x for x in page.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert lines[0].startswith("# "), f"{page.name}: no title on its first line"
    assert lines[1].strip() in ("```bash", "```console"), (
        f"{page.name}: the first thing under the title must be the command a user types, "
        "in a bash block"
    )
