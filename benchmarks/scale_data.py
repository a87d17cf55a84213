"""Data at scale: a synthetic pool of N samples of a stated size, written directly (no model is
asked), through generate's reopen (the pool recovered and indexed, the selection streamed into
samples.jsonl), filter, and export; each stage a `distill` process of its own, timed, its peak
RSS read from the kernel (wait4). Prints seconds per 1,000 samples and peak RSS per stage at
each size, and the growth of the per-sample cost between the smallest size and each other.

    python benchmarks/scale_data.py [--sizes 10000,100000] [--bytes 4096]
                                    [--stages generate,filter,export] [--workdir DIR]

The rows are what generate writes: the plan's own sample ids and prompts (so the reopen finds
every sample held and asks nothing), a rationale of --bytes characters ending in the gold
answer, so filter's checks pass it; the rationales differ per sample, so dedup keeps them. The
teacher is the tiny random test model, only to give the plan its identity. A stage that is not
yet bounded in memory can be left out with --stages.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--stages", default="generate,filter,export")
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
        for stage in stages:
            if stage == "export":
                argv = ["-c", EXPORT, str(here / "runs"), str(here / "export")]
            else:
                argv = [stage, *ov]
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
