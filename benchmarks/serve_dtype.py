"""generate's teacher throughput in bfloat16 against float32, side by side on this machine: the
two answers the serving-dtype rule (pipeline/hardware.py) can give on a CPU.

    python benchmarks/serve_dtype.py [--config FILE] [--questions 100] [--reps 3] [KEY=VALUE ...]

Each run is `distill generate` on a fresh run dir (a fresh engine, an empty pool) with
`teacher.serve.dtype` set to one of the two; the runs alternate (bf16, fp32, bf16, ...) so load
from anything else hits both alike. The figure is the manifest's `tokens_per_second`: completion
tokens over the asking time, engine start-up excluded. It prints each run, the medians, the
per-rep ratio float32 / bfloat16 and its median, and which of the two the rule picks here.
The default config is the bundled run (SmolLM2-135M, 4 samples of at most 128 tokens per
question), on its first --questions train questions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import distill, stage_dir, stage_stats  # noqa: E402 - sets sys.path

DTYPES = ("bfloat16", "float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    from pipeline.hardware import choose_dtype, detect

    hw = detect()
    print(f"machine: {hw.describe()}; the rule picks {choose_dtype('auto', hw).dtype}")
    rates: dict[str, list[float]] = {d: [] for d in DTYPES}
    with tempfile.TemporaryDirectory(prefix="distill-dtype-") as tmp:
        for rep in range(a.reps):
            for dtype in DTYPES:
                runs = Path(tmp) / f"{dtype}-{rep}"
                ov = [
                    f"runs_dir={runs}",
                    f"task.max_train={a.questions}",
                    f"teacher.serve.dtype={dtype}",
                    *a.overrides,
                ]
                config = ["--config", str(a.config)] if a.config else []
                distill("generate", *config, *ov)
                st = stage_stats(stage_dir("generate", ov, a.config))
                rates[dtype].append(st["tokens_per_second"])
                print(
                    f"rep {rep} {dtype:9s} {st['tokens_per_second']:8.1f} tok/s "
                    f"({st['new_completion_tokens']} tokens in {st['generation_seconds']} s)",
                    flush=True,
                )
    ratios = [f / b for b, f in zip(rates["bfloat16"], rates["float32"], strict=True)]
    for dtype in DTYPES:
        r = rates[dtype]
        print(f"{dtype:9s} median {statistics.median(r):8.1f} tok/s  [{min(r):.1f}, {max(r):.1f}]")
    print(
        f"float32 / bfloat16: median {statistics.median(ratios):.2f} "
        f"(per rep {', '.join(f'{x:.2f}' for x in ratios)})"
    )


if __name__ == "__main__":
    main()
