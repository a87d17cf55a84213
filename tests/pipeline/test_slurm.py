"""`distill slurm generate`: the scripts it writes (checked with bash -n, since Slurm is not
installed here), their directives, and its refusals. The scripts run for real, with Slurm's
variables set by hand, in tests/stages/generate/test_shards_e2e.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_cli


def _write(tmp_path: Path, *extra: str):
    return run_cli("slurm", "generate", "--array", "4", *extra, f"runs_dir={tmp_path}")


def test_scripts_are_valid_bash_with_the_array_and_the_dependency(tmp_path: Path) -> None:
    r = _write(tmp_path, "--partition", "gpu", "--gpus-per-task", "1", "generate.n=8")
    assert r.returncode == 0, r.stderr
    d = tmp_path / "default" / "slurm"
    for name in ("generate-array.sbatch", "generate-merge.sbatch", "submit.sh"):
        assert subprocess.run(["bash", "-n", str(d / name)]).returncode == 0, name
    array = (d / "generate-array.sbatch").read_text()
    assert "#SBATCH --array=0-3" in array and "#SBATCH --requeue" in array
    assert "#SBATCH --signal=B:USR1@120" in array and "#SBATCH --partition=gpu" in array
    assert "#SBATCH --gpus-per-task=1" in array
    assert "generate.n=8" in array and f"runs_dir={tmp_path}" in array  # overrides carried
    assert "--shard" not in array  # each task reads its own SLURM_ARRAY_TASK_ID
    merge = (d / "generate-merge.sbatch").read_text()
    assert "--array" not in merge and "gpus-per-task" not in merge
    submit = (d / "submit.sh").read_text()
    assert "--dependency=afterok:" in submit
    assert "sbatch is not on PATH" in _write(tmp_path, "--submit").stderr  # no Slurm here


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--array", "0"], "--array 0"),
        (["teacher.endpoint=http://user:hunter2@host:8000/v1"], "holds a credential"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, args: list[str], why: str) -> None:
    r = run_cli("slurm", "generate", "--array", "2", *args, f"runs_dir={tmp_path}")
    assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "hunter2" not in r.stderr
    assert not (tmp_path / "default" / "slurm" / "generate-array.sbatch").exists()
