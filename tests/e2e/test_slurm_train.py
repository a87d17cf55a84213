"""`distill slurm train --nodes 2`: the rendered sbatch script run by bash on this machine, two
"nodes" as two tasks rendezvousing on 127.0.0.1 over gloo (ddp_cpu), real vLLM for the
filter's input and real TRL for the training. Slurm is not installed here: `srun` and
`scontrol` are stand-ins (named so below) that do what Slurm does for this script: start one
task per node with its SLURM_NODEID, and name the first node."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from pipeline.ports import free_port

pytestmark = pytest.mark.slow

SRUN = """#!/usr/bin/env bash
# Stand-in for Slurm's srun: --ntasks=N copies of the command here, SLURM_NODEID 0..N-1.
n=1
while [[ $1 == --* ]]; do case $1 in --ntasks=*) n=${1#--ntasks=};; esac; shift; done
pids=()
for ((i = 0; i < n; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""
SCONTROL = (
    "#!/bin/sh\n# Stand-in for `scontrol show hostnames`: one node, this one.\necho 127.0.0.1\n"
)


def test_rendered_multinode_script_trains_one_run_over_two_nodes(
    tiny_model: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    ov = [
        f"runs_dir={tmp_path / 'runs'}",
        f"cache_dir={tmp_path / 'cache'}",
        f"teacher.model={tiny_teacher}",
        f"train.student={tiny_model}",
        "task.max_train=8",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        "filter.checks=[truncated,format,exact_dedup]",  # the tiny teacher knows the format
        "train.max_steps=2",
        "train.batch_size=2",
        "train.validate=false",
        "train.accelerate_config=ddp_cpu",
    ]
    r = run_cli("slurm", "train", "--nodes", "2", "--port", str(free_port()), *ov)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "runs" / "default" / "slurm" / "train-multinode.sbatch"
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "train.machine_rank=$SLURM_NODEID" in text
    stub = tmp_path / "bin"
    stub.mkdir()
    for name, body in (("srun", SRUN), ("scontrol", SCONTROL)):
        (stub / name).write_text(body)
        (stub / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"PATH": f"{stub}:{env['PATH']}", "SLURM_JOB_NODELIST": "node[1-2]"}
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "machine 1 of 2 joins rank 0 at 127.0.0.1" in done.stdout
    (manifest,) = (tmp_path / "runs" / "default" / "train").glob("*/manifest.json")
    stats = json.loads(manifest.read_text())["stats"]
    assert stats["num_processes"] == 2 and stats["steps"] == 2  # one run, two machines
    assert (manifest.parent / "model" / "model.safetensors").is_file()
    # A rerun: both nodes find the stage complete; rank 1 does not wait for a launch.
    again = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("train: cached") == 2
