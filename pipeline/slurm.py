"""`distill slurm generate --array N`: the sbatch scripts for a job array of generate shards and
the merge job that waits for it; `distill slurm train --nodes N`: one train run across nodes.
Written under `runs/<run>/slurm/` (and submitted with `--submit`).

    generate-array.sbatch   N tasks; task i runs `distill generate` as shard i/N (it reads
                            SLURM_ARRAY_TASK_ID/_COUNT/_MIN), requeueable: Slurm signals USR1
                            120 s before the time limit, the shard stops at a sample boundary
                            and the task requeues itself; the requeued task resumes its shard
    generate-merge.sbatch   one task, after every array task ended well (afterok): a plain
                            `distill generate`, which merges the shards and asks for the rest
    submit.sh               sbatch the array, then the merge with the dependency
    train-multinode.sbatch  N nodes, one task each: filter once, then on every node
                            `distill train` with train.machine_rank=$SLURM_NODEID and the first
                            node as the rendezvous (accelerate's multi-machine launch)

Slurm itself is not needed to write them; only `--submit` and submit.sh call sbatch. The scripts
name the project checkout, the config and the working dir by absolute path, so they and the run dir
must be on a filesystem every node sees. Credentials never go in them: a key stays in its
environment variable, which sbatch passes to the tasks (`--export=ALL`, its default).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.paths import ROOT
from pipeline.redact import redact_text

ARRAY, MERGE, SUBMIT = "generate-array.sbatch", "generate-merge.sbatch", "submit.sh"
TRAIN = "train-multinode.sbatch"


@dataclass(frozen=True)
class SlurmOptions:
    array: int  # tasks in the array: the number of shards
    partition: str = ""
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    time: str = ""  # Slurm's own format, e.g. 04:00:00
    account: str = ""

    def check(self) -> None:
        if self.array < 1:
            raise UserError(f"--array {self.array}: the number of shards must be at least 1")
        for flag, v in (
            ("--gpus-per-task", self.gpus_per_task),
            ("--cpus-per-task", self.cpus_per_task),
        ):
            if v is not None and v < 0:
                raise UserError(f"{flag} {v}: must be 0 or more")


def _directives(name: str, opts: SlurmOptions, logs: Path, *, array: bool) -> list[str]:
    lines = [f"#SBATCH --job-name={name}"]
    if array:
        lines += [
            f"#SBATCH --array=0-{opts.array - 1}",
            f"#SBATCH --output={logs}/generate-%A_%a.out",
            "#SBATCH --requeue",
            # USR1 to the batch shell 120 s before the time limit: time to stop and requeue.
            "#SBATCH --signal=B:USR1@120",
        ]
    else:
        lines.append(f"#SBATCH --output={logs}/generate-merge-%j.out")
    return lines + _resources(opts, ("gpus-per-task", opts.gpus_per_task if array else None))


def _resources(opts: SlurmOptions, gpus: tuple[str, int | None]) -> list[str]:
    """The #SBATCH lines for what the user gave: partition, account, time, CPUs and GPUs."""
    given = (
        ("partition", opts.partition),
        ("account", opts.account),
        ("time", opts.time),
        ("cpus-per-task", opts.cpus_per_task),
        gpus,
    )
    return [f"#SBATCH --{flag}={v}" for flag, v in given if v not in ("", None)]


def render(
    run_dir: Path, config: Path, overrides: list[str], opts: SlurmOptions, cwd: Path
) -> dict[str, str]:
    """The three files' texts, by name; the tasks run in `cwd`, where relative paths in the
    config and the overrides mean what they meant when the scripts were written."""
    opts.check()
    _check_overrides(overrides)
    logs = run_dir / "slurm" / "logs"
    cmd = shlex.join([str(ROOT / "distill"), "generate", "--config", str(config), *overrides])
    name = f"distill-{run_dir.name}-generate"
    head = ["#!/usr/bin/env bash"]
    array = [
        *head,
        *_directives(name, opts, logs, array=True),
        "set -uo pipefail",
        f"cd {shlex.quote(str(cwd))}",
        "# The shard is this task's: distill reads SLURM_ARRAY_TASK_ID/_COUNT/_MIN.",
        f"{cmd} &",
        "pid=$!",
        "requeue() {",
        '  kill -USR1 "$pid" 2>/dev/null  # the shard stops at a sample boundary',
        '  wait "$pid"',
        '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        "  exit 0",
        "}",
        "trap requeue USR1",
        'wait "$pid"',
        "rc=$?",
        # a USR1 that arrived while waiting ran the trap, which exits; this is the plain end
        'exit "$rc"',
    ]
    merge = [
        *head,
        *_directives(f"{name}-merge", opts, logs, array=False),
        "set -euo pipefail",
        f"cd {shlex.quote(str(cwd))}",
        "# No SLURM_ARRAY_TASK_ID here: a plain generate merges every shard, asks for the rest.",
        f"exec {cmd}",
    ]
    here = run_dir / "slurm"
    submit = [
        "#!/usr/bin/env bash",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(str(logs))}",
        f"array=$(sbatch --parsable {shlex.quote(str(here / ARRAY))})",
        f"merge=$(sbatch --parsable --dependency=afterok:${{array%%;*}} "
        f"{shlex.quote(str(here / MERGE))})",
        'echo "generate array job ${array%%;*} (' + str(opts.array) + " shards), merge job "
        '${merge%%;*} after it"',
    ]
    return {
        ARRAY: "\n".join(array) + "\n",
        MERGE: "\n".join(merge) + "\n",
        SUBMIT: "\n".join(submit) + "\n",
    }


def render_train(
    run_dir: Path,
    config: Path,
    overrides: list[str],
    opts: SlurmOptions,
    cwd: Path,
    nodes: int,
    per_node: int,
    port: int = 29500,
) -> dict[str, str]:
    """`distill train` over `nodes` machines, `per_node` processes each (GPUs, or CPU processes
    with ddp_cpu): filter first on the first node, then one task per node; each runs
    `distill train` with its SLURM_NODEID as train.machine_rank and the first node as the
    rendezvous. Rank 0 runs the stage (lock, manifest); the others join its accelerate run."""
    _check_overrides(overrides)
    if nodes < 2:
        raise UserError(f"--nodes {nodes}: training across nodes needs at least 2")
    if per_node < 1:
        raise UserError(f"--processes-per-node {per_node}: must be at least 1")
    logs = run_dir / "slurm" / "logs"
    distill = [str(ROOT / "distill")]
    base = ["--config", str(config), *overrides]
    train = shlex.join([*distill, "train", *base, *train_overrides(nodes, per_node)])
    # $SLURM_NODEID and the head's address are per task: the task's own shell expands them.
    node_cmd = (
        f"{train} train.machine_rank=$SLURM_NODEID train.main_process_ip=$DISTILL_HEAD "
        f"train.main_process_port=$DISTILL_PORT"
    )
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name=distill-{run_dir.name}-train",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={logs}/train-%j.out",
    ]
    lines += _resources(opts, ("gpus-per-node", opts.gpus_per_task or None))
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(str(cwd))}",
        "# What train reads, made (or found cached) once, before the machines meet.",
        shlex.join([*distill, "filter", *base]),
        'export DISTILL_HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export DISTILL_PORT={port}",
        "# One task per node; node i is train.machine_rank i. Rank 0 writes the stage dir.",
        f"srun --ntasks={nodes} --ntasks-per-node=1 bash -c {shlex.quote(node_cmd)}",
    ]
    return {TRAIN: "\n".join(lines) + "\n"}


def train_overrides(nodes: int, per_node: int) -> list[str]:
    """What every node's `distill train` adds to the user's overrides (the rank and the
    rendezvous come from the task)."""
    return [
        "train.launcher=accelerate",
        f"train.num_processes={nodes * per_node}",
        f"train.num_machines={nodes}",
    ]


def _check_overrides(overrides: list[str]) -> None:
    for o in overrides:
        if redact_text(o) != o:
            raise UserError(
                f"override {redact_text(o)!r} holds a credential, which would be written into "
                "the sbatch script; put the key in the environment variable teacher.api_key_env "
                "names instead"
            )


def write(run_dir: Path, files: dict[str, str]) -> Path:
    """Write the scripts under `run_dir/slurm/` (executable); returns that dir."""
    from pipeline.records import atomic_write_text

    d = run_dir / "slurm"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(d / name, text)
        (d / name).chmod(0o755)
    return d


def submit(d: Path, files: dict[str, str]) -> str:
    """sbatch what was written: submit.sh (the array, then the merge after it), or the one
    script."""
    if shutil.which("sbatch") is None:
        raise UserError(
            f"sbatch is not on PATH here; the scripts are in {d}: submit them on a Slurm login node"
        )
    cmd = ["bash", str(d / SUBMIT)] if SUBMIT in files else ["sbatch", str(d / next(iter(files)))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"sbatch failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r.stdout.strip()
