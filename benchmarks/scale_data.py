"""Data at scale: a synthetic pool of N samples of a stated size, written directly (no model is
asked), through the shard merge, generate's reopen (the pool recovered and indexed, the
selection streamed into samples.jsonl), filter, train's data preparation and export; each stage a
process of its own, timed, its peak RSS its own VmHWM. Prints seconds per 1,000 samples and peak
RSS per stage at each size, and the growth of the per-sample cost between the smallest size and
each other.

    python benchmarks/scale_data.py [--sizes 10000,100000] [--bytes 4096]
                                    [--stages merge,generate,filter,train,export] [--workdir DIR]

*merge*: the pool is written as 4 shard pools (`--shard i/4`'s files, each question where its
shard would have asked it) and a plain `distill generate` merges them into the run's pool, then
streams the selection. *generate*: `distill generate --force` over the merged (or directly
written) pool: reopen it, plan, stream the selection again.
*train*: pre-flight only (stages/train/preflight.py: kept.jsonl tokenized with the tiny model's
tokenizer, checked, written as Arrow), no model loaded and no step trained. *export*: the
dataset part of `distill export` (kept.jsonl to parquet).

The rows are what generate writes: the plan's own sample ids and prompts (so the reopen finds
every sample held and asks nothing), a rationale of --bytes characters ending in the gold
answer, so filter's checks pass it; the rationales differ per sample, so dedup keeps them. The
teacher is the tiny random test model, only to give the plan its identity. A stage that is not
yet bounded in memory can be left out with --stages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, tiny_model  # noqa: E402 - sets sys.path
from synthetic_pool import scale_overrides, write_pool, write_task  # noqa: E402

# export's dataset part on its own (the whole `distill export` wants a trained student too)
EXPORT = """import json, sys
from pathlib import Path
from stages.filter.hub import write_dataset
d = next(Path(sys.argv[1]).glob("*/filter/*/manifest.json")).parent
sha = json.loads((d / "manifest.json").read_text())["outputs"]["kept.jsonl"]["sha256"]
write_dataset(d, sha, Path(sys.argv[2]))
"""


# train's data preparation on its own: pre-flight, no model loaded
TRAIN = """import sys, tempfile
from pathlib import Path
from pipeline.config import load_config
from stages.train.preflight import preflight
cfg = load_config(Path("pipeline/configs/default.yaml"), sys.argv[2:])
kept = next(Path(sys.argv[1]).glob("*/filter/*/kept.jsonl"))
with tempfile.TemporaryDirectory(dir=sys.argv[1]) as work:
    preflight(Path(cfg.train.student), kept, cfg.train, Path(work))
"""


def as_shards(pool: Path, count: int) -> None:
    """The pool's rows moved into `count` shard pools, each row where its shard would have
    written it; the run's pool is gone, as before a merge."""
    from stages.generate.shards import Shard

    shards = [Shard(i, count) for i in range(count)]
    files = [open(s.pool(pool.parent), "w") for s in shards]
    with open(pool) as f:
        for line in f:
            qid = json.loads(line)["question_id"]
            files[next(i for i, s in enumerate(shards) if s.owns(qid))].write(line)
    for out in files:
        out.close()
    pool.unlink()


def timed(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one process: `distill ARGV`, or python -c when ARGV[0] is
    -c. The peak is the process's own VmHWM, polled from /proc: wait4's ru_maxrss would count
    this benchmark's own memory, which a forked child inherits as its starting mark."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, *(argv if argv[0] == "-c" else ["-m", "pipeline.cli", *argv])],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = [0]

    def poll() -> None:
        status = Path(f"/proc/{p.pid}/status")
        while p.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    err = p.stderr.read() if p.stderr else b""
    p.wait()
    watcher.join()
    if p.returncode != 0:
        sys.exit(f"{argv[0]} failed:\n{err.decode()[-3000:]}")
    return time.monotonic() - t0, peak[0] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--bytes", type=int, default=4096)
    ap.add_argument("--stages", default="merge,generate,filter,train,export")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="scale-data-"))
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model(work)
    stages = args.stages.split(",")
    results: dict[int, dict[str, tuple[float, float]]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        here = work / f"n{size}"
        shutil.rmtree(here, ignore_errors=True)
        here.mkdir()
        task = here / "task.jsonl"
        write_task(task, size + size // 500 + 20)
        ov = scale_overrides(task, here / "runs", work / "cache", model, size)
        pool, n = write_pool(ov, args.bytes)
        mb = pool.stat().st_size / 1e6
        print(f"{n:,} samples, pool {mb:,.0f} MB ({mb * 1e6 / n:,.0f} bytes per sample)")
        got: dict[str, tuple[float, float]] = {}
        if "merge" in stages:
            as_shards(pool, 4)
        for stage in stages:
            if stage == "export":
                argv = ["-c", EXPORT, str(here / "runs"), str(here / "export")]
            elif stage == "train":
                argv = ["-c", TRAIN, str(here / "runs"), *ov, f"train.student={model}"]
            else:
                # a rerun of generate is a cache hit: --force redoes the reopen
                argv = {"merge": ["generate"], "generate": ["generate", "--force"]}.get(
                    stage, [stage]
                ) + ov
            got[stage] = timed(argv)
            s, rss = got[stage]
            print(
                f"  {stage:<9} {s:8.1f} s  {1000 * s / n:6.2f} s per 1,000  peak RSS {rss:,.0f} MB"
            )
        results[n] = got
        shutil.rmtree(here / "runs", ignore_errors=True)
    sizes = sorted(results)
    print("\nper-sample cost against the smallest size (1.0 = linear):")
    for stage in stages:
        base = results[sizes[0]][stage][0] / sizes[0]
        growth = ", ".join(f"{n:,}: {results[n][stage][0] / n / base:.2f}x" for n in sizes[1:])
        print(f"  {stage:<9} {growth}")


if __name__ == "__main__":
    main()
