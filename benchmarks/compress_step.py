"""What the compression recipe costs per training step: seconds and peak memory of a student
cut from a model (every other layer) trained with the teacher in the loop, against SFT of the
cut and SFT of the full-size model, on the same rows and settings.

    .venv/bin/python benchmarks/compress_step.py [--model DIR] [--steps 8] [--repeats 3]

Arms, each `stages.train.run` in a fresh process (so each one's peak resident memory is its
own, read from the kernel with wait4), interleaved over --repeats rounds:
  sft_full      SFT of --model (the default recipe's student)
  sft_cut       SFT of its cut (train.cut.keep_every 2)
  logits_cut    the cut, objective features: full-vocabulary logit KD against --model
  hidden_cut    + hidden states (cosine, weight 1)
  relation_cut  + relations (weight 1)
The teacher in the loop is --model itself, untrained: the same size and cost as the trained
student the shipped `compress` config uses. Prints median seconds/step and peak RSS per arm,
and both as ratios to SFT of the cut and to SFT of the full model. On a GPU the peak is the
process's host memory, not the device's.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT
from train_step import make_rows

CUT = ["train.cut.keep_every=2"]
FEATS = [*CUT, "train.objective=features", "train.kd.alpha=0.5", "train.kd.temperature=2.0"]
ARMS = {
    "sft_full": [],
    "sft_cut": CUT,
    "logits_cut": FEATS,
    "hidden_cut": [*FEATS, "train.features.hidden=1.0", "train.features.hidden_loss=cosine"],
    "relation_cut": [
        *FEATS,
        "train.features.hidden=1.0",
        "train.features.hidden_loss=cosine",
        "train.features.relation=1.0",
    ],
}


def child(overrides: list[str], filter_dir: Path, out: Path) -> None:
    """One arm in this process: the train stage, its stats as one JSON line."""
    from pipeline.config import load_config
    from pipeline.stage import RunContext
    from stages.train import run

    stats = run(load_config(None, overrides), RunContext.of({"filter": filter_dir}, out))
    print("STATS " + json.dumps(stats), flush=True)


def measure(overrides: list[str], filter_dir: Path, work: Path) -> tuple[float, float]:
    """(seconds per step, peak resident MiB) of one arm in a fresh process."""
    out = Path(tempfile.mkdtemp(dir=work, prefix="arm-"))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps(overrides),
        "--filter",
        str(filter_dir),
        "--out",
        str(out),
    ]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    text = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"arm {overrides} failed:\n{text[-3000:]}")
    stats = json.loads(next(x for x in text.splitlines() if x.startswith("STATS "))[6:])
    shutil.rmtree(out, ignore_errors=True)
    return stats["seconds_per_step"], usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", help="HF dir to cut and teach with (default: a 4-layer tiny test model)"
    )
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--filter", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(json.loads(a.child), a.filter, a.out)

    work = Path(tempfile.mkdtemp(prefix="compress-bench-"))
    atexit.register(shutil.rmtree, work, True)
    if a.model:
        model = Path(a.model)
    else:  # the tiny test model, 4 layers deep so that its cut has 2
        from tiny_model import build_tiny_model

        model = build_tiny_model(work / "tiny4", layers=4)
    filter_dir = work / "filter"
    filter_dir.mkdir()
    rows = make_rows(a.examples)
    (filter_dir / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [
        f"train.student={model}",
        f"cache_dir={work / 'cache'}",
        f"teacher.model={model}",
        f"train.max_steps={a.steps}",
        f"train.batch_size={a.batch_size}",
        f"train.max_length={a.max_length}",
        "train.learning_rate=0.0001",
        "train.save_steps=100000",
        "train.validate=false",
    ]
    secs: dict[str, list[float]] = {k: [] for k in ARMS}
    mib: dict[str, list[float]] = {k: [] for k in ARMS}
    for r in range(a.repeats):  # interleaved: load on the machine hits every arm alike
        for name, extra in ARMS.items():
            s, m = measure([*common, *extra], filter_dir, work)
            secs[name].append(s)
            mib[name].append(m)
            print(f"round {r + 1} {name}: {s:.4f} s/step, peak {m:.0f} MiB", flush=True)
    med = {k: statistics.median(v) for k, v in secs.items()}
    mem = {k: statistics.median(v) for k, v in mib.items()}
    print(f"\nmodel {model}  steps {a.steps}  batch {a.batch_size}  medians of {a.repeats}")
    print(
        f"{'arm':14} {'s/step':>8} {'x sft_cut':>10} {'x sft_full':>10} {'peak MiB':>9} "
        f"{'x sft_cut':>10} {'x sft_full':>10}"
    )
    for k in ARMS:
        print(
            f"{k:14} {med[k]:8.4f} {med[k] / med['sft_cut']:10.2f} "
            f"{med[k] / med['sft_full']:10.2f} {mem[k]:9.0f} {mem[k] / mem['sft_cut']:10.2f} "
            f"{mem[k] / mem['sft_full']:10.2f}"
        )


if __name__ == "__main__":
    main()
