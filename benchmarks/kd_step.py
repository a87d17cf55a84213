"""What soft labels cost: seconds per training step with train.objective kd against sft, on the
same rows in the same order, and the bytes a token's top-k takes on disk.

    .venv/bin/python benchmarks/kd_step.py --filter-dir runs/kd/filter/<key> \\
        [--model DIR] [--examples 96] [--steps 8] [--repeats 3]

--filter-dir is a filter stage dir of a run with generate.logprobs set (kept.jsonl and
kept.logprobs.bin). The rows are those the kd pre-flight keeps (the teacher's own tokens), so
both objectives train on identical batches; in one process the two alternate --repeats times
(load on the machine hits both alike) and each one's median seconds/step is kept. Prints both,
the ratio (target: kd <= 1.3x sft) and the store's bytes per token (target at k=20: <= 150).
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from common import ROOT  # noqa: F401 - sets sys.path


def _rows(filter_dir: Path, model: Path, examples: int, work: Path) -> Path:
    """A filter dir holding the first `examples` rows the kd pre-flight keeps."""
    from pipeline.config import load_config
    from stages.shared.layout import KEPT_STORE
    from stages.train.preflight import preflight

    cfg = load_config(
        None, [f"train.student={model}", "generate.logprobs=20", "train.objective=kd"]
    )
    lines = [x for x in (filter_dir / "kept.jsonl").read_text().split("\n") if x.strip()]
    _, prepared = preflight(model, filter_dir / "kept.jsonl", cfg.train, work)
    out = work / "filter"
    out.mkdir()
    chosen = [lines[i] for i in prepared.sources[:examples]]
    (out / "kept.jsonl").write_text("".join(x + "\n" for x in chosen))
    shutil.copy(filter_dir / KEPT_STORE, out / KEPT_STORE)
    return out


def _run(objective: str, model: Path, filter_dir: Path, work: Path, a: argparse.Namespace) -> dict:
    from pipeline.config import load_config
    from stages.train import run

    cfg = load_config(
        None,
        [
            f"train.student={model}",
            f"cache_dir={work / 'cache'}",
            "generate.logprobs=20",
            f"train.objective={objective}",
            f"train.max_steps={a.steps}",
            f"train.batch_size={a.batch_size}",
            f"train.max_length={a.max_length}",
            "train.save_steps=100000",
        ],
    )
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{objective}-"))
    try:
        return run(cfg, {"filter": filter_dir}, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # a checkpoint per run: hundreds of MB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--filter-dir", type=Path, required=True)
    p.add_argument("--model", type=Path, help="student dir (default: the bundled SmolLM2)")
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    from stages.shared.models import local_model

    model = a.model or local_model("smollm2-135m")
    work = Path(tempfile.mkdtemp(prefix="kd-bench-"))
    atexit.register(shutil.rmtree, work, True)
    filter_dir = _rows(a.filter_dir, model, a.examples, work)
    times: dict[str, list[float]] = {"sft": [], "kd": []}
    for _ in range(a.repeats):
        for objective in ("sft", "kd"):
            times[objective].append(_run(objective, model, filter_dir, work, a)["seconds_per_step"])
    med = {k: statistics.median(v) for k, v in times.items()}
    from stages.shared.layout import KEPT_STORE
    from stages.shared.softlabels import Store

    stats = json.loads((a.filter_dir / "manifest.json").read_text())["stats"].get("logprobs", {})
    k = next(iter(Store.open(a.filter_dir / KEPT_STORE).index.values())).header["k"]
    print()
    print(f"model {model}  examples {a.examples}  steps {a.steps}  batch {a.batch_size}")
    print(f"sft   {med['sft']:.4f} s/step  (median of {a.repeats}: {times['sft']})")
    print(f"kd    {med['kd']:.4f} s/step  (median of {a.repeats}: {times['kd']})")
    print(f"kd / sft           {med['kd'] / med['sft']:.3f}  (target <= 1.3)")
    print(
        f"kept store         {stats.get('bytes_per_token')} bytes/token at k={k}"
        f" ({stats.get('tokens')} tokens, {stats.get('bytes')} bytes; target <= 150)"
    )


if __name__ == "__main__":
    main()
