"""Teacher throughput: `distill generate` (managed vLLM server + async client + JSONL appends)
against bare `vllm.LLM.chat` over the same prompts and sampling settings.

    python benchmarks/generate_throughput.py [--model DIR] [--prompts 400] [--n 4]
        [--max-tokens 128] [--reps 3] [--offline] [--bare-defaults]

Defaults are the bundled default run's generate stage: 400 questions x 4 samples, 128 tokens.

Only generation is timed on every side: for the pipeline, the manifest's `generation_seconds`
(server or engine start-up excluded) and `new_completion_tokens` (the server's usage counts);
for bare vLLM, the `LLM.chat` call (engine start-up excluded) and the generated token count.
Every run starts cold (a fresh server, a fresh engine, empty prefix cache), so warm-up counts
equally on every side. Runs are interleaved (pipeline, bare, pipeline, bare, ...) so load from
other processes hits both alike; each repetition's ratio is printed, then the median ratio.

Fair by default: bare vLLM gets the very calls the pipeline makes (the same prompts, each with
the same n and SamplingParams, seeds included) and the engine settings the managed CPU server
runs with (whole prefills, 8192 batched tokens, 256 sequences), so both generate the same tokens.
--bare-defaults instead runs bare `vllm.LLM` as shipped (one engine seed, chunked prefill).
--offline also times `teacher.serve.engine=offline` (vllm.LLM inside the pipeline, with the
managed server's engine settings and per-request seeds) against the same matched bare vLLM.

Without --model the tiny random test model (tests/tiny_model.py) is built once under --workdir.
Target: pipeline >= 0.95 x bare. Bare vLLM runs in its own process, under a __main__ guard.
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

from common import ROOT, distill, stage_dir, stage_stats, tiny_model  # noqa: E402 - sets sys.path


def pipeline_overrides(
    args: argparse.Namespace, model: Path, workdir: Path, run: str, engine: str = "server"
) -> list[str]:
    return [
        f"runs_dir={workdir / 'runs'}",
        f"cache_dir={workdir / 'cache'}",
        f"run={run}",
        f"teacher.model={model}",
        "teacher.endpoint=auto",
        f"teacher.serve.engine={engine}",
        f"task.max_train={args.prompts}",
        f"generate.n={args.n}",
        f"generate.sampling.max_tokens={args.max_tokens}",
        f"generate.sampling.temperature={args.temperature}",
        f"generate.concurrency={args.concurrency}",
        *args.set,
    ]


def run_pipeline(args: argparse.Namespace, model: Path, workdir: Path, engine: str) -> dict:
    run = f"bench-{engine}-{time.time_ns()}"  # a fresh run: nothing reused from earlier runs
    ov = pipeline_overrides(args, model, workdir, run, engine)
    t0 = time.monotonic()
    distill("generate", *ov)
    wall = time.monotonic() - t0
    st = stage_stats(stage_dir("generate", ov))
    return {
        "tokens": st["new_completion_tokens"],
        "seconds": st["generation_seconds"],
        "tok_s": st["new_completion_tokens"] / st["generation_seconds"],
        "samples": st["samples"],
        "wall_incl_startup": wall,
        "cfg": ov,
    }


def requests_for(args: argparse.Namespace, model: Path, workdir: Path) -> list[dict]:
    """Exactly the calls the pipeline makes (its own planning code): messages, n, sampling."""
    from pipeline.config import load_config, shipped_config
    from pipeline.models import teacher_identity
    from stages.generate.samples import calls, plan_samples

    cfg = load_config(
        shipped_config("default"), pipeline_overrides(args, model, workdir, "bench-plan")
    )
    planned = plan_samples(cfg, teacher_identity(cfg.teacher, cfg.cache_dir))
    return [
        {"messages": r.messages, "n": r.n, "sampling": r.sampling}
        for r in calls(planned, cfg.generate.samples_per_call)
    ]


def run_bare(model: Path, reqs: list[dict], seed: int, matched: bool) -> dict:
    """Child-process side: bare vllm.LLM over the same requests.

    matched: the server's engine settings and per-request seeds (see ManagedServer.start);
    otherwise vLLM's offline defaults and one engine seed.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from vllm import LLM, SamplingParams

    from pipeline.hardware import concrete

    engine: dict = {}
    if matched:
        engine = {
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": 8192,
            "max_num_seqs": 256,
        }
    llm = LLM(
        model=str(model),
        dtype=concrete("auto"),  # as the pipeline's engines take it on this machine
        enforce_eager=True,
        max_model_len=1024,
        seed=seed,
        **engine,
    )
    params = [
        SamplingParams(
            n=r["n"],
            temperature=r["sampling"]["temperature"],
            top_p=r["sampling"]["top_p"],
            max_tokens=r["sampling"]["max_tokens"],
            stop=r["sampling"].get("stop") or None,
            seed=r["sampling"]["seed"] if matched else None,
        )
        for r in reqs
    ]
    t0 = time.monotonic()
    outs = llm.chat([r["messages"] for r in reqs], params, use_tqdm=False)
    seconds = time.monotonic() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    samples = sum(len(o.outputs) for o in outs)
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds, "samples": samples}


def bare_in_subprocess(
    model: Path, reqs: list[dict], workdir: Path, seed: int, matched: bool
) -> dict:
    req_file = workdir / "bare_requests.json"
    req_file.write_text(json.dumps(reqs))
    out_file = workdir / "bare_result.json"
    out_file.unlink(missing_ok=True)
    argv = [str(req_file), str(out_file), str(model), str(seed), str(int(matched))]
    p = subprocess.run(
        [sys.executable, __file__, "--bare", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        sys.exit(f"bare vLLM failed:\n{p.stderr[-3000:]}")
    return json.loads(out_file.read_text())


def show(name: str, r: dict) -> None:
    print(
        f"{name:15s} {r['tokens']:7d} tokens in {r['seconds']:7.2f}s = {r['tok_s']:8.1f} tok/s"
        f"  ({r['samples']} samples)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF model dir (default: tiny model)")
    # Defaults: the bundled default run's generate stage (pipeline/configs/default.yaml).
    ap.add_argument("--prompts", type=int, default=None, help="default: task.max_train")
    ap.add_argument("--n", type=int, default=None, help="samples per prompt; default: generate.n")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--concurrency", type=int, default=None, help="default: generate.concurrency")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--set", action="append", default=[], help="extra pipeline override KEY=VALUE (repeat)"
    )
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--offline", action="store_true", help="also time teacher.serve.engine=offline")
    ap.add_argument(
        "--bare-defaults",
        action="store_true",
        help="compare the server path with bare vLLM's defaults, not its own engine settings",
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distill-bench")
    ap.add_argument("--order", choices=["pipeline-first", "bare-first"], default="pipeline-first")
    args = ap.parse_args()
    from pipeline.config import load_config, shipped_config

    default = load_config(shipped_config("default"))
    for name, value in [
        ("prompts", default.task.max_train),
        ("n", default.generate.n),
        ("max_tokens", default.generate.sampling.max_tokens),
        ("temperature", default.generate.sampling.temperature),
        ("concurrency", default.generate.concurrency),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = tiny_model(args.workdir)
    model = model.resolve()

    reqs = requests_for(args, model, args.workdir)
    print(
        f"{len(reqs)} calls for {sum(r['n'] for r in reqs)} samples x max_tokens "
        f"{args.max_tokens}, concurrency {args.concurrency}, "
        f"{args.reps} interleaved reps, model {model}",
        flush=True,
    )
    # (label, runner, comparator label): each pipeline side is compared with its own bare side.
    matched = not args.bare_defaults
    bare_server = "bare-matched" if matched else "bare-defaults"
    sides = {
        "pipeline": lambda: run_pipeline(args, model, args.workdir, "server"),
        bare_server: lambda: bare_in_subprocess(model, reqs, args.workdir, args.seed, matched),
    }
    pairs = [("pipeline", bare_server)]
    if args.offline:
        sides["offline"] = lambda: run_pipeline(args, model, args.workdir, "offline")
        sides.setdefault(
            "bare-matched",
            lambda: bare_in_subprocess(model, reqs, args.workdir, args.seed, True),
        )
        pairs.append(("offline", "bare-matched"))
    order = list(sides)
    if args.order == "bare-first":
        order = [k for k in order if k.startswith("bare")] + [
            k for k in order if not k.startswith("bare")
        ]
    results: dict[str, list[dict]] = {k: [] for k in sides}
    ratios: dict[str, list[float]] = {p: [] for p, _ in pairs}
    for rep in range(args.reps):
        for which in order:
            results[which].append(sides[which]())
            show(f"[{rep + 1}] {which}", results[which][-1])
        for p, b in pairs:
            ratios[p].append(results[p][-1]["tok_s"] / results[b][-1]["tok_s"])
            print(f"[{rep + 1}] {p} / {b} = {ratios[p][-1]:.3f}", flush=True)
    summary: dict = {}
    for p, b in pairs:
        med = statistics.median(ratios[p])
        rs = ", ".join(f"{r:.3f}" for r in ratios[p])
        print(f"median {p} / {b} = {med:.3f}  (reps: {rs}; target >= 0.95)")
        summary[f"{p}/{b}"] = {"median": med, "ratios": ratios[p]}
    for k, rs in results.items():
        summary[k] = {
            "median_tok_s": statistics.median(r["tok_s"] for r in rs),
            "tok_s": [r["tok_s"] for r in rs],
            "tokens": [r["tokens"] for r in rs],
            "seconds": [r["seconds"] for r in rs],
        }
    walls = [r["wall_incl_startup"] for r in results["pipeline"]]
    print(f"pipeline wall time incl. server start-up: {statistics.median(walls):.1f}s (median)")
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        req_path, out_path, model_dir, seed, matched = sys.argv[2:7]
        reqs = json.loads(Path(req_path).read_text())
        result = run_bare(Path(model_dir), reqs, int(seed), matched == "1")
        Path(out_path).write_text(json.dumps(result))
    else:
        main()
