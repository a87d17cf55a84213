"""The stage chain (pipeline/runner.py) on its own, over two stand-in stages (`first`, then
`second` reading it): a run writes each stage's outputs then its manifest, a rerun finds both
complete and runs nothing, a damaged output is rebuilt, --force reruns the target alone, and
the runner finds what it needs by a stage's hooks (`distill plan`'s cost_plan, the chains
`distill status` lists), not by a stage's name. The real stages: test_stage.py and the e2e
tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import runner
from pipeline import status as status_module
from pipeline.budget import Calls
from pipeline.config import load_config, shipped_config
from pipeline.stage import KeyParts, RunContext
from pipeline.status import status


def _stage(name: str, upstream: tuple[str, ...], ran: list[str], **hooks: Any) -> Any:
    def run(cfg: Any, ctx: RunContext) -> dict[str, Any]:
        ran.append(name)
        read = [json.loads((d / "out.json").read_text())["by"] for d in ctx.inputs.values()]
        (ctx.out / "out.json").write_text(json.dumps({"by": name, "read": read}))
        (ctx.out / "rows.jsonl").write_text("1\n2\n3\n")
        return {"rows": 1}

    return SimpleNamespace(
        NAME=name,
        VERSION=1,
        OUTPUTS=("out.json", "rows.jsonl"),
        UPSTREAM=upstream,
        HELP=name,
        key_parts=lambda cfg: KeyParts(config={"stage": name}),
        run=run,
        progress=lambda cfg, out: "started",
        summary=lambda stats, out: "",
        **hooks,
    )


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    ran: list[str] = []
    stages = {
        "first": _stage(
            "first",
            (),
            ran,
            cost_plan=lambda cfg, out, pilot, later: f"plan {pilot} {[c.what for c in later]}",
        ),
        "second": _stage(
            "second",
            ("first",),
            ran,
            ends_chain=lambda cfg: True,
            teacher_calls=lambda cfg: [Calls("second's teacher", 1, 2, 3)],
        ),
    }
    for module in (runner, status_module):  # status reads the same stages
        monkeypatch.setattr(module, "STAGES", tuple(stages))
        monkeypatch.setattr(module, "stage_module", lambda name: stages[name])
    cfg = load_config(shipped_config("default"), [f"runs_dir={tmp_path}"])
    return SimpleNamespace(cfg=cfg, ran=ran)


def test_a_run_then_a_rerun_that_finds_everything_complete(chain: SimpleNamespace) -> None:
    first = runner.run_chain(chain.cfg, "second")
    assert [r.status for r in first] == ["ran", "ran"] and chain.ran == ["first", "second"]
    out = json.loads((first[1].dir / "out.json").read_text())
    assert out == {"by": "second", "read": ["first"]}
    assert json.loads((first[1].dir / "manifest.json").read_text())["stats"] == {"rows": 1}
    again = runner.run_chain(chain.cfg, "second")
    assert [r.status for r in again] == ["cached", "cached"] and chain.ran == ["first", "second"]


def test_a_damaged_output_is_rebuilt_and_force_reruns_the_target_only(
    chain: SimpleNamespace,
) -> None:
    done = runner.run_chain(chain.cfg, "second")
    (done[0].dir / "out.json").write_text("{}")  # another size than the manifest says
    assert [r.status for r in runner.run_chain(chain.cfg, "second")] == ["ran", "cached"]
    forced = runner.run_chain(chain.cfg, "second", force=True)
    assert [r.status for r in forced] == ["cached", "ran"]
    assert chain.ran == ["first", "second", "first", "second"]


def test_the_runner_finds_stages_by_their_hooks(chain: SimpleNamespace) -> None:
    # the stage that has the hook, given the later stages' teacher calls
    assert runner.cost_plan(chain.cfg, 7) == 'plan 7 ["second\'s teacher"]'
    runner.run_chain(chain.cfg, "first")
    listed = status(chain.cfg)  # the chain of each stage that ends one
    assert [(s.name, s.state) for s in listed] == [("first", "complete"), ("second", "missing")]


def test_status_reads_no_output_whole_unless_asked_to_verify(
    chain: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quick status compares sizes with the manifest (a row count reads gigabytes at a
    million samples); --verify counts rows and hashes, and finds damage of the same size."""
    import pipeline.cache

    [first, _] = runner.run_chain(chain.cfg, "second")
    rows = first.dir / "rows.jsonl"
    rows.write_text("1 2\n3\n")  # the same 6 bytes, two rows where the manifest says 3
    real = pipeline.cache.count_lines

    def unread(path: Path) -> int:
        raise AssertionError(f"status read {path} whole")

    monkeypatch.setattr(pipeline.cache, "count_lines", unread)
    assert [s.state for s in status(chain.cfg)] == ["complete", "complete"]
    monkeypatch.setattr(pipeline.cache, "count_lines", real)
    checked = status(chain.cfg, verify=True)
    assert checked[0].state == "corrupt" and "rows.jsonl has 2 rows" in checked[0].note
