"""Teacher throughput: `distill generate` (managed vLLM server + async client + JSONL appends)
against bare `vllm.LLM.chat` over the same prompts and sampling settings.

    python benchmarks/generate_throughput.py [--model DIR] [--prompts 200] [--max-tokens 128]

Only generation is timed on both sides: for the pipeline, the manifest's `generation_seconds`
(server start-up excluded) and `new_completion_tokens`; for bare vLLM, the `LLM.chat` call (engine
start-up excluded) and the generated token count. Without --model the tiny random test model
(tests/tiny_model.py) is built once under --workdir. Prints both rates and their ratio (target:
pipeline >= 0.95 x bare). Bare vLLM runs in its own process, under a __main__ guard (spawn).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pipeline_overrides(args: argparse.Namespace, model: Path, workdir: Path, run: str) -> list[str]:
    return [
        f"runs_dir={workdir / 'runs'}",
        f"cache_dir={workdir / 'cache'}",
        f"run={run}",
        f"teacher.model={model}",
        "teacher.endpoint=auto",
        f"task.max_train={args.prompts}",
        "generate.n=1",
        f"generate.sampling.max_tokens={args.max_tokens}",
        f"generate.sampling.temperature={args.temperature}",
        f"generate.concurrency={args.concurrency}",
    ]


def run_pipeline(args: argparse.Namespace, model: Path, workdir: Path) -> dict:
    run = f"bench-{int(time.time())}"  # a fresh run: nothing reused from earlier benchmarks
    ov = pipeline_overrides(args, model, workdir, run)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", *ov],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"distill generate failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    from pipeline.config import load_config, shipped_config
    from pipeline.runner import plan

    d = plan(load_config(shipped_config("default"), ov), "generate")["generate"].dir
    st = json.loads((d / "manifest.json").read_text())["stats"]
    return {
        "tokens": st["new_completion_tokens"],
        "seconds": st["generation_seconds"],
        "tok_s": st["new_completion_tokens"] / st["generation_seconds"],
        "samples": st["samples"],
        "wall_incl_startup": wall,
        "cfg": ov,
    }


def requests_for(args: argparse.Namespace, model: Path, workdir: Path) -> list[dict]:
    """Exactly the messages and sampling the pipeline sends (its own planning code)."""
    from pipeline.config import load_config, shipped_config
    from stages.generate import plan_requests, teacher_identity

    cfg = load_config(
        shipped_config("default"), pipeline_overrides(args, model, workdir, "bench-plan")
    )
    planned = plan_requests(cfg, teacher_identity(cfg))
    return [{"messages": r.messages, "sampling": r.sampling} for r, _, _ in planned]


def run_bare(model: Path, reqs: list[dict], seed: int) -> dict:
    """Child-process side: bare vllm.LLM over the same requests."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model), dtype="bfloat16", enforce_eager=True, max_model_len=1024, seed=seed)
    params = [
        SamplingParams(
            n=1,
            temperature=r["sampling"]["temperature"],
            top_p=r["sampling"]["top_p"],
            max_tokens=r["sampling"]["max_tokens"],
            stop=r["sampling"].get("stop") or None,
        )
        for r in reqs
    ]
    t0 = time.monotonic()
    outs = llm.chat([r["messages"] for r in reqs], params, use_tqdm=False)
    seconds = time.monotonic() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds, "samples": len(outs)}


def bare_in_subprocess(model: Path, reqs: list[dict], workdir: Path, seed: int) -> dict:
    req_file = workdir / "bare_requests.json"
    req_file.write_text(json.dumps(reqs))
    out_file = workdir / "bare_result.json"
    p = subprocess.run(
        [sys.executable, __file__, "--bare", str(req_file), str(out_file), str(model), str(seed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        sys.exit(f"bare vLLM failed:\n{p.stderr[-3000:]}")
    return json.loads(out_file.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF model dir (default: tiny model)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--concurrency", type=int, default=64, help="pipeline requests in flight")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distill-bench")
    ap.add_argument("--order", choices=["pipeline-first", "bare-first"], default="pipeline-first")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_model import build_tiny_model

        model = build_tiny_model(args.workdir / "tiny-model")
    model = model.resolve()

    reqs = requests_for(args, model, args.workdir)
    print(f"{len(reqs)} prompts x max_tokens {args.max_tokens}, model {model}", flush=True)
    results = {}
    order = ["pipeline", "bare"] if args.order == "pipeline-first" else ["bare", "pipeline"]
    for which in order:
        if which == "pipeline":
            results["pipeline"] = run_pipeline(args, model, args.workdir)
        else:
            results["bare"] = bare_in_subprocess(model, reqs, args.workdir, args.seed)
        r = results[which]
        print(
            f"{which:9s} {r['tokens']:7d} tokens in {r['seconds']:6.2f}s = {r['tok_s']:8.1f} tok/s"
            f"  ({r['samples']} samples)",
            flush=True,
        )
    ratio = results["pipeline"]["tok_s"] / results["bare"]["tok_s"]
    print(f"pipeline / bare = {ratio:.3f}  (target >= 0.95)")
    print(
        f"pipeline wall time incl. server start-up: {results['pipeline']['wall_incl_startup']:.1f}s"
    )
    print(
        json.dumps(
            {k: {kk: v[kk] for kk in ("tokens", "seconds", "tok_s")} for k, v in results.items()}
            | {"ratio": ratio}
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        req_path, out_path, model_dir, seed = sys.argv[2:6]
        result = run_bare(Path(model_dir), json.loads(Path(req_path).read_text()), int(seed))
        Path(out_path).write_text(json.dumps(result))
    else:
        main()
