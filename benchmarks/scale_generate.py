"""The same generate work as one process, as 2 shards run at once then merged, and on 1 and 2
Ray engine actors: wall seconds per arm, interleaved over rounds, medians and ratios against
one process (the best bare alternative on one machine: the offline engine, started once).

    python benchmarks/scale_generate.py [--model DIR|smollm2-135m] [--questions 100] [--n 4]
                                        [--max-tokens 64] [--rounds 3] [--workdir DIR]

Each arm is the wall time of the `distill` commands it takes, from nothing to the stage output
(engine start-up included, since a user pays it), in a fresh runs dir (nothing reused); the
sample texts are checked equal to the one-process arm's. On one host with 2 cores, shards and
actors share the same cores: what this shows here is the overhead each way of spreading costs
(extra engine starts, Ray's start-up, the merge), not a speed-up; across machines each shard or
actor brings its own cores or GPU. Without --model the tiny random test model is built.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, stage_dir, tiny_model  # noqa: E402 - sets sys.path

ARMS = ("one process", "2 shards + merge", "ray, 1 actor", "ray, 2 actors")


def _overrides(args: argparse.Namespace, model: str, runs: Path) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={args.workdir / 'cache'}",
        f"teacher.model={model}",
        f"task.max_train={args.questions}",
        f"generate.n={args.n}",
        f"generate.sampling.max_tokens={args.max_tokens}",
    ]


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(*procs: subprocess.Popen) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"a generate failed:\n{err[-3000:]}")


def run_arm(arm: str, args: argparse.Namespace, model: str) -> tuple[float, bytes]:
    """Seconds from nothing to the stage output, and that output."""
    runs = Path(tempfile.mkdtemp(dir=args.workdir, prefix="runs-"))
    ov = _overrides(args, model, runs)
    t0 = time.monotonic()
    if arm == "one process":
        _wait(_cli("generate", *ov, "teacher.serve.engine=offline"))
    elif arm == "2 shards + merge":
        shards = [
            _cli("generate", "--shard", f"{i}/2", *ov, "teacher.serve.engine=offline")
            for i in range(2)
        ]
        _wait(*shards)
        _wait(_cli("generate", *ov, "teacher.serve.engine=offline"))
    else:
        actors = 1 if "1 actor" in arm else 2
        _wait(
            _cli(
                "generate",
                *ov,
                "teacher.serve.engine=ray",
                f"teacher.serve.replicas={actors}",
                f"teacher.serve.ray.chunk={args.chunk}",
            )
        )
    seconds = time.monotonic() - t0
    out = (stage_dir("generate", ov) / "samples.jsonl").read_bytes()
    shutil.rmtree(runs)
    return seconds, out


def _same(out: bytes, reference: bytes) -> str:
    """Whether an arm wrote the one-process arm's samples: the same ids always (they are content
    addresses of what is asked); the same texts where the engine batches alike (bf16 numerics
    depend on the batch a sequence shares)."""
    if out == reference:
        return "same samples, byte for byte"
    import json

    a = {r["id"]: r["completion"] for r in map(json.loads, out.splitlines())}
    b = {r["id"]: r["completion"] for r in map(json.loads, reference.splitlines())}
    if set(a) != set(b):
        return "OTHER SAMPLE IDS"
    alike = sum(a[i] == b[i] for i in a)
    return f"same ids; {alike} of {len(a)} texts identical"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="", help="a local model dir, or smollm2-135m")
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--chunk", type=int, default=32, help="requests per Ray actor call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="scale-"))).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    model = args.model or str(tiny_model(args.workdir))
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    reference = None
    for r in range(args.rounds):
        order = ARMS if r % 2 == 0 else tuple(reversed(ARMS))  # interleaved, both orders
        for arm in order:
            seconds, out = run_arm(arm, args, model)
            reference = reference or out
            same = _same(out, reference)
            print(f"round {r + 1}: {arm:18s} {seconds:7.1f} s  ({same})", flush=True)
            times[arm].append(seconds)
    base = statistics.median(times["one process"])
    print(
        f"\n{args.questions} questions x {args.n} samples, max {args.max_tokens} tokens, "
        f"{os.cpu_count()} cores, {args.rounds} rounds (median wall seconds)"
    )
    for arm in ARMS:
        med = statistics.median(times[arm])
        print(
            f"{arm:18s} {med:7.1f} s   x{med / base:.2f} of one process   "
            f"(runs: {', '.join(f'{t:.1f}' for t in times[arm])})"
        )


if __name__ == "__main__":
    main()
