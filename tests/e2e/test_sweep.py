"""`distill sweep` on tiny models (real vLLM, real TRL): every trial is a cached train stage
whose student was measured on the validation split as it trained, the trials are ranked on it,
and only the chosen settings are evaluated on the eval split, once. The sweep never reads the
eval split: corrupting every eval answer leaves the chosen trial, its weights and its
validation figures exactly as they were. A rerun trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from pipeline.config import TaskConfig, load_config
from pipeline.tasks import load_task

pytestmark = pytest.mark.slow

SPLIT = {"split_by": "fact", "eval_fraction": 0.3}


def _task_file(path: Path, corrupt_eval: bool) -> Path:
    """The bundled task as a jsonl task; with `corrupt_eval`, every question the split holds
    out for eval (its group decides, not its answer) gets a wrong answer."""
    rows = [json.loads(x) for x in (ROOT / "data/arith.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if corrupt_eval:
        held = {q.id for q in load_task(TaskConfig(source=f"jsonl:{path}", **SPLIT)).eval}
        for r in rows:
            if r["id"] in held:
                r["answer"] = str(int(r["answer"]) + 1000)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(runs: Path, task: Path, teacher: Path, student: Path) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={runs / 'cache'}",
        f"teacher.model={teacher}",
        f"train.student={student}",
        f"task.source=jsonl:{task}",
        "task.split_by=fact",
        "task.eval_fraction=0.3",
        "task.max_train=16",
        "task.max_eval=10",
        "task.max_validation=12",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        "filter.checks=[truncated,format,exact_dedup]",
        "train.max_steps=4",
        "train.batch_size=4",
        "train.validate_every=2",  # two measurements a trial: select: best has a choice
        "train.select=best",
        "eval.sampling.max_tokens=24",
        "eval.models=[student]",
        "sweep.grid={train.learning_rate: [0.003, 0.0001]}",
    ]


def _sweep(runs: Path) -> dict:
    (d,) = [m.parent for m in (runs / "default" / "sweep").glob("*/manifest.json")]
    return json.loads((d / "sweep.json").read_text()) | {"dir": str(d)}


def _weights(runs: Path, train_key: str) -> str:
    m = json.loads((runs / "default" / "train" / train_key[:12] / "manifest.json").read_text())
    return m["outputs"]["model"]["files"]["model.safetensors"]["sha256"]


def test_sweep_ranks_on_validation_evaluates_once_and_never_reads_eval(
    tiny_model: Path, tiny_teacher: Path, tmp_path: Path
):
    runs = tmp_path / "runs"
    clean = _overrides(runs, _task_file(tmp_path / "clean.jsonl", False), tiny_teacher, tiny_model)
    r = run_cli("sweep", *clean)
    assert r.returncode == 0, r.stderr[-4000:]
    first = _sweep(runs)
    assert len(first["trials"]) == 2 and first["validation_questions"] == 12
    for t in first["trials"]:
        (seed,) = t["per_seed"].values()
        assert 0 <= t["mean"] == seed["accuracy"] <= 1 and seed["step"] in (2, 4)
    chosen = first["chosen"]
    assert chosen["mean"] == max(t["mean"] for t in first["trials"])
    # The chosen settings' chain ran to eval, once, on the chosen trial's own train stage.
    evals = [json.loads(m.read_text()) for m in runs.glob("default/eval/*/manifest.json")]
    assert len(evals) == 1
    (key,) = [s["train_key"] for s in chosen["per_seed"].values()]
    assert evals[0]["inputs"]["train"] == key
    # chosen.yaml is a config that runs as it is, with the winner's settings.
    cfg = load_config(Path(first["dir"]) / "chosen.yaml")
    lr = chosen["values"]["train.learning_rate"]
    assert cfg.train.learning_rate == lr and not cfg.sweep.grid
    assert yaml.safe_load((Path(first["dir"]) / "chosen.yaml").read_text())["train"]["select"]
    # Its train stage kept the best measured step's weights, and its card says which.
    tdir = runs / "default" / "train" / key[:12]
    stats = json.loads((tdir / "manifest.json").read_text())["stats"]
    assert [v["step"] for v in stats["validation"]] == [2, 4]
    assert stats["selected_step"] == max(stats["validation"], key=lambda v: v["accuracy"])["step"]
    assert f"step {stats['selected_step']}" in (tdir / "model" / "README.md").read_text()
    assert any("validation_accuracy" in json.loads(x) for x in (tdir / "train_log.jsonl").open())

    again = run_cli("sweep", *clean)  # everything cached: nothing trains, nothing is asked
    assert again.returncode == 0 and ": ran" not in again.stdout
    assert "starting" not in again.stdout + again.stderr

    bad = _overrides(runs, _task_file(tmp_path / "bad.jsonl", True), tiny_teacher, tiny_model)
    r = run_cli("sweep", *bad)
    assert r.returncode == 0, r.stderr[-4000:]
    second = _sweep_for(runs, exclude=first["dir"])
    assert second["chosen"]["values"] == chosen["values"]
    assert [t["per_seed"] for t in _strip_keys(second)] == [
        t["per_seed"] for t in _strip_keys(first)
    ]
    (bad_key,) = [s["train_key"] for s in second["chosen"]["per_seed"].values()]
    assert bad_key != key  # another task file: other keys, and yet the same weights
    assert _weights(runs, bad_key) == _weights(runs, key)


def _sweep_for(runs: Path, exclude: str) -> dict:
    (d,) = [
        m.parent
        for m in (runs / "default" / "sweep").glob("*/manifest.json")
        if str(m.parent) != exclude
    ]
    return json.loads((d / "sweep.json").read_text()) | {"dir": str(d)}


def _strip_keys(sweep: dict) -> list[dict]:
    """The trials without their train keys (which name the task file, so differ)."""
    return [
        {
            **t,
            "per_seed": {
                s: {k: v for k, v in x.items() if k != "train_key"}
                for s, x in t["per_seed"].items()
            },
        }
        for t in sweep["trials"]
    ]
