"""The reference pages are generated from the code (scripts/docs_reference.py): a committed page
that differs from what the generator writes now fails here, naming the command to regenerate."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from conftest import ROOT

from pipeline.config import describe


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_reference", ROOT / "scripts/docs_reference.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["docs_reference"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_reference_pages_are_what_the_generator_writes() -> None:
    gen = _generator()
    for rel, make in gen.PAGES.items():
        page = ROOT / rel
        assert page.is_file(), f"{rel} is missing; generate it with: {gen.COMMAND}"
        assert page.read_text(encoding="utf-8") == make(), (
            f"{rel} is stale (the code changed since it was generated); regenerate it with: "
            f"{gen.COMMAND}"
        )


def test_the_config_reference_has_every_field() -> None:
    page = _generator().config_reference()
    missing = [f.key for f in describe() if f"| `{f.key}` |" not in page]
    assert missing == []
    assert "| `teacher.serve.engine` |" in page and "| runtime |" in page


def test_the_cli_reference_has_every_command_and_option() -> None:
    from pipeline import cli

    gen = _generator()
    page = gen.cli_reference()
    sub = gen._subparsers(cli.parser())
    for name, p in sub.choices.items():
        assert f"## distill {name}\n" in page
        for a in p._actions:
            for opt in a.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}`" in page, f"distill {name} {opt}"


def test_a_stale_page_is_found(tmp_path, monkeypatch) -> None:
    gen = _generator()
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert sorted(gen.stale()) == sorted(gen.PAGES)  # none written there yet
    assert gen.main([]) == 0
    assert gen.stale() == []
    (tmp_path / "docs/reference/cli.md").write_text("edited by hand\n")
    assert gen.stale() == ["docs/reference/cli.md"]
    assert gen.main(["--check"]) == 1
