"""seeds: the chain once per seed, and what holds across them.

The chain runs as configured (the run `distill run` made, reused from its cache) and once more for
each value in `seeds`, which sets the teacher's sampling seed and the training seed (the draws that
move a result most): the whole chain (generate, filter, train, eval) runs for it; what does not
depend on the seed is shared through the caches (the pool's samples are content-addressed, and
eval reuses the teacher's and the base model's predictions across seeds). This stage then reads
every seed's eval: each model's mean accuracy and its spread across seeds beside each run's
Wilson interval, and the paired tests (student vs base...) per seed, on that seed's own pairs.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic
from pipeline.records import atomic_write_json, atomic_write_text
from pipeline.stage import ExtraInput, KeyParts, RunContext
from stages.shared.layout import METRICS

NAME = "seeds"
VERSION = 1
OUTPUTS = ("seeds.json", "seeds.md")
UPSTREAM: tuple[str, ...] = ()
HELP = "run the chain once per seed; mean and spread of every model's accuracy"


def seed_config(cfg: Config, seed: int) -> Config:
    """`cfg` with its random draws set by `seed`: the teacher's sampling and the training."""
    g = cfg.generate
    sampling = dataclasses.replace(g.sampling, seed=seed)
    return dataclasses.replace(
        cfg,
        generate=dataclasses.replace(g, sampling=sampling),
        train=dataclasses.replace(cfg.train, seed=seed),
        seeds=[],
    )


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    """The chain as configured (what `distill run` made, so it is reused), then once per seed."""
    configured = ExtraInput("configured", "eval", dataclasses.replace(cfg, seeds=[]))
    return [configured, *(ExtraInput(f"seed{s}", "eval", seed_config(cfg, s)) for s in cfg.seeds)]


def key_parts(cfg: Config) -> KeyParts:
    return KeyParts(config={"seeds": semantic(cfg.seeds)})


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    out = ctx.out
    runs = {label: json.loads((d / METRICS).read_text()) for label, d in ctx.inputs.items()}
    # In eval.models order: metrics.json is written with sorted keys, which loses it.
    models = list(dict.fromkeys(m for r in runs.values() for m in r.get("models", r["per_model"])))
    per_model: dict[str, Any] = {}
    for m in models:
        accs = [r["per_model"][m]["accuracy"] for r in runs.values() if m in r["per_model"]]
        per_model[m] = {
            "n_seeds": len(accs),
            "mean": statistics.fmean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else None,
            "min": min(accs),
            "max": max(accs),
            "per_seed": {
                label: {k: r["per_model"][m][k] for k in ("accuracy", "ci_low", "ci_high", "n")}
                for label, r in runs.items()
                if m in r["per_model"]
            },
        }
    tests = sorted({t for r in runs.values() for t in r["mcnemar"]})
    paired = {
        t: {label: r["mcnemar"][t] for label, r in runs.items() if t in r["mcnemar"]} for t in tests
    }
    result = {
        "seeds": list(ctx.inputs),
        "questions": next(iter(runs.values()))["questions"],
        "per_model": per_model,
        "paired": paired,
    }
    atomic_write_json(out / "seeds.json", result)
    atomic_write_text(out / "seeds.md", render(result))
    return {
        "seeds": len(runs),
        "models": models,
        "mean_accuracy": {m: round(v["mean"], 4) for m, v in per_model.items()},
    }


def render(result: dict[str, Any]) -> str:
    """A markdown table: each model's mean and spread across runs, then each run's figure."""
    seeds = result["seeds"]
    head = ["model", f"mean over {len(seeds)} run(s)", "sd", "min - max", *seeds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, v in result["per_model"].items():
        sd = "-" if v["sd"] is None else f"{100 * v['sd']:.1f}"
        cells = [
            m,
            f"{100 * v['mean']:.1f}%",
            sd,
            f"{100 * v['min']:.1f} - {100 * v['max']:.1f}",
        ]
        for s in seeds:
            x = v["per_seed"].get(s)
            cells.append(
                "-"
                if x is None
                else f"{100 * x['accuracy']:.1f} [{100 * x['ci_low']:.1f}, {100 * x['ci_high']:.1f}]"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Each run: the same {result['questions']} held-out questions; its accuracy with a Wilson "
        "95% interval. sd: the sample standard deviation across runs, in points.",
    ]
    for t, by_seed in result["paired"].items():
        p = ", ".join(
            f"{s}: {x['b10']} vs {x['b01']}, p = {x['p_value']:.2g}" for s, x in by_seed.items()
        )
        x, y = t.split("_vs_", 1)
        lines.append(
            f"- {x} vs {y} (exact McNemar, per run; questions only {x} got right vs only {y}): {p}"
        )
    return "\n".join(lines) + "\n"


def ends_chain(cfg: Config) -> bool:
    """A config with seeds asks for this chain too: `distill status` lists it."""
    return bool(cfg.seeds)


def progress(cfg: Config, out: Path) -> str:
    return "started, not finished"


def summary(stats: dict[str, Any], out: Path) -> str:
    path = out / "seeds.md"
    return path.read_text() if path.is_file() and stats.get("seeds", 0) > 1 else ""
