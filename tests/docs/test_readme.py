"""The README is short and a door to the docs: at most 220 lines, every relative link it has
resolves (file and heading), and the pages a newcomer looks for first are one click away."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT
from markdown.extensions.toc import slugify

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _anchors(path: Path) -> set[str]:
    """The ids of a Markdown file's headings, as mkdocs' toc (and, for plain words, GitHub)
    makes them."""
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        m = None if fenced else HEADING.match(line)
        if m:
            out.add(slugify(re.sub(r"[`*]", "", m[1]), "-"))
    return out


def _links() -> list[str]:
    return LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 220, f"README.md has {lines} lines; move detail to a docs page"


def test_every_relative_link_of_the_readme_resolves() -> None:
    bad = []
    for target in _links():
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        file, _, anchor = target.partition("#")
        path = ROOT / file if file else ROOT / "README.md"
        if not path.exists():
            bad.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            bad.append(f"{target}: no heading with that id in {file or 'README.md'}")
    assert bad == []


def test_own_endpoint_and_slurm_are_one_click_from_the_readme() -> None:
    links = set(_links())
    assert "docs/guides/own-teacher.md#your-own-vllm-endpoint" in links
    assert "docs/guides/scale.md#slurm-job-arrays" in links


def test_every_docs_page_is_reached_from_the_readme_or_the_nav() -> None:
    """The README links the guides' and results' entry pages (mkdocs' strict build checks that
    every page is in the nav)."""
    links = {t.partition("#")[0] for t in _links()}
    for page in (
        "docs/index.md",
        "docs/results/index.md",
        "docs/design.md",
        "docs/reference/config.md",
        "docs/reference/cli.md",
    ):
        assert page in links, page
