"""Size and vLLM decoding speed of the models a config evaluates, measured alike, side by side.

    .venv/bin/python benchmarks/model_speed.py --config pipeline/configs/compress.yaml \\
        [overrides...] [--reps 3] [--questions 300]

For each model in `eval.models` (the teacher, the base, the full-size and the cut student),
bare `vllm.LLM` in a fresh process of its own answers that model's own eval prompts of the
first --questions held-out questions (the teacher its few-shot prompt, the students the
zero-shot one), greedy, each answer exactly `eval.sampling.max_tokens` tokens long
(`ignore_eos`): every model decodes the same number of tokens, so tokens/s compares the models,
not how long each one chooses to talk. Only the `chat` call is timed (engine start-up excluded);
the engine is the pipeline's own (`pipeline.offline.llm_kwargs`: whole prefills, 8192 batched
tokens, 256 sequences), in the dtype the pipeline takes on this machine, eager. Runs are
interleaved (every model once, then again, --reps times) so load from other processes hits all
alike; it prints each model's median tokens/s with its range and its median ratio, rep by
rep, to the first model. Size: parameters and safetensors bytes. Every model must have local
weights (a teacher asked at an endpoint has none).

The trained models must exist: run `distill eval` with the same config and overrides first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common import ROOT  # importing common also puts the repo on sys.path

if TYPE_CHECKING:
    from pipeline.config import Config
    from stages.eval.predictions import ModelUnderTest


def under_test(cfg: Config, questions: int) -> list[ModelUnderTest]:
    """Eval's own models (the weights eval would serve for each label) with eval's own
    requests for the first `questions` held-out questions; a missing model is eval's error."""
    from pipeline.runner import plan
    from pipeline.tasks import load_task
    from stages.eval.predictions import models_under_test, plan_requests

    muts = models_under_test(cfg, cfg.eval.models, plan(cfg, "eval")["eval"].inputs)
    plan_requests(cfg, muts, load_task(cfg.task).eval[:questions])
    return muts


def size(model: Path) -> dict:
    """Parameters (from the safetensors headers) and bytes of the weights files."""
    params, nbytes = 0, 0
    for f in sorted(model.glob("*.safetensors")):
        nbytes += f.stat().st_size
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, t in header.items():
            if name != "__metadata__":
                n = 1
                for d in t["shape"]:
                    n *= d
                params += n
    return {"params": params, "bytes": nbytes}


def run_bare(model: str, messages: list, max_tokens: int) -> dict:
    """Child-process side: one engine, one timed chat call."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from vllm import LLM, SamplingParams

    from pipeline.hardware import concrete
    from pipeline.offline import EngineArgs, llm_kwargs

    # the dtype the pipeline's engines take on this machine (pipeline/hardware.py)
    args = EngineArgs(model_dir=model, dtype=concrete("auto"), max_model_len=1024, window=0)
    llm = LLM(**llm_kwargs(args), seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    t0 = time.monotonic()
    outs = llm.chat(messages, params, use_tqdm=False)
    seconds = time.monotonic() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def bare_in_subprocess(model: Path, messages: list, max_tokens: int, workdir: Path) -> dict:
    req, out = workdir / "speed_requests.json", workdir / "speed_result.json"
    req.write_text(json.dumps(messages))
    out.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--bare", str(model), str(req), str(out), str(max_tokens)]
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bare vLLM on {model} failed:\n{p.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="a YAML config path")
    ap.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distill-speed")
    args = ap.parse_args()
    from pipeline.config import load_config
    from pipeline.errors import UserError

    cfg = load_config(args.config, args.overrides)
    max_tokens = cfg.eval.sampling.max_tokens
    try:
        muts = under_test(cfg, args.questions)
    except UserError as e:  # a model not trained yet: run `distill eval` with this config first
        sys.exit(f"error: {e}")
    remote = [m.label for m in muts if m.spec.model_dir is None]
    if remote:
        sys.exit(
            f"error: {', '.join(remote)}: no local weights to load; leave it out of eval.models"
        )
    dirs = {m.label: Path(m.spec.model_dir) for m in muts}
    messages = {m.label: [req.messages for req, _ in m.requests] for m in muts}
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {label: [] for label in dirs}
    for rep in range(args.reps):
        for label, d in dirs.items():
            r = bare_in_subprocess(d, messages[label], max_tokens, args.workdir)
            runs[label].append(r)
            print(
                f"rep {rep + 1} {label:13s} {r['tokens']} tokens in {r['seconds']:.2f}s "
                f"= {r['tok_s']:.1f} tok/s",
                flush=True,
            )

    first = next(iter(dirs))
    n = len(messages[first])
    print(f"\n{n} held-out questions x {max_tokens} tokens each, greedy, {args.reps} reps")
    print(f"{'model':13s} {'params':>12s} {'MB':>8s}  tok/s median [range]  ratio")
    for label, d in dirs.items():
        s, toks = size(d), [r["tok_s"] for r in runs[label]]
        pairs = zip(runs[label], runs[first], strict=True)
        ratio = statistics.median(a["tok_s"] / b["tok_s"] for a, b in pairs)
        print(
            f"{label:13s} {s['params']:12,d} {s['bytes'] / 1e6:8.1f} "
            f"{statistics.median(toks):8.1f} [{min(toks):.1f}, {max(toks):.1f}]  "
            f"x{ratio:.2f} of {first}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        model, req, out, max_tokens = sys.argv[2:6]
        result = run_bare(model, json.loads(Path(req).read_text()), int(max_tokens))
        Path(out).write_text(json.dumps(result))
    else:
        main()
