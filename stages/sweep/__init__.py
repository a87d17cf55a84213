"""sweep: train settings tried on one cached dataset, ranked on the validation split.

Every combination of `sweep.grid` (train.* keys) is a trial, and every trial (once per seed of
`sweep.seeds`, or with train.seed alone) is an ordinary train stage on the same filter output,
declared as this stage's extra inputs: cached, resumable, reused by any later sweep or run that
asks for the same settings. Each trial's train stage measured the student on the validation
split while it trained (stages/train/validation.py); its score here is the validation accuracy
of the weights it kept (train.select), averaged over seeds. The eval split is never read: this
stage ranks the trials, writes `sweep.json` (every trial, its settings, its accuracy per seed,
mean and spread), `sweep.md` and `chosen.yaml` (the whole config with the winner's settings, to
run as it is), and `follow_up` hands the runner the chosen config, whose chain then runs to eval
once: the only time the chosen settings meet the eval split.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import yaml

from pipeline.config import Config, semantic, to_dict, trials, with_values
from pipeline.errors import UserError
from pipeline.records import atomic_write_json, atomic_write_text
from pipeline.stage import ExtraInput, KeyParts, RunContext
from pipeline.tasks import load_task
from stages.shared.intervals import noise

NAME = "sweep"
VERSION = 1
RESULTS, REPORT, CHOSEN = "sweep.json", "sweep.md", "chosen.yaml"
OUTPUTS = (RESULTS, REPORT, CHOSEN)
UPSTREAM: tuple[str, ...] = ()
HELP = "try train settings on the cached data, rank on validation, eval the best once"


def key_parts(cfg: Config) -> KeyParts:
    return KeyParts(config={"sweep": semantic(cfg.sweep)})


def _seeds(cfg: Config) -> list[int]:
    return list(cfg.sweep.seeds) or [cfg.train.seed]


def _trial_config(cfg: Config, values: dict[str, Any], seed: int) -> Config:
    """The trial's config: its values and seed, and no sweep of its own."""
    trial = with_values(cfg, {**values, "train.seed": seed})
    return dataclasses.replace(trial, sweep=type(cfg.sweep)(), seeds=[])


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    """One train stage per trial and seed, labelled trialI-seedS."""
    return [
        ExtraInput(f"trial{i}-seed{s}", "train", _trial_config(cfg, values, s))
        for i, values in enumerate(trials(cfg))
        for s in _seeds(cfg)
    ]


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    rows = []
    for i, values in enumerate(trials(cfg)):
        per_seed = {}
        for s in _seeds(cfg):
            stats = ctx.manifests[f"trial{i}-seed{s}"].get("stats", {})
            acc = stats.get("selected_validation_accuracy")
            if acc is None:
                raise UserError(
                    f"sweep: trial {values} (seed {s}) has no validation accuracy; a sweep "
                    "ranks on the validation split: keep train.validate on and "
                    "task.validation_fraction above 0"
                )
            per_seed[str(s)] = {
                "accuracy": acc,
                "step": stats.get("selected_step"),
                "train_key": ctx.input_keys[f"trial{i}-seed{s}"],
            }
        accs = [v["accuracy"] for v in per_seed.values()]
        rows.append(
            {
                "trial": i,
                "values": values,
                "mean": round(statistics.fmean(accs), 4),
                "sd": round(statistics.stdev(accs), 4) if len(accs) > 1 else None,
                "per_seed": per_seed,
            }
        )
    # Highest mean first; among equals the earlier trial (grid order), so a rerun agrees.
    ranked = sorted(rows, key=lambda r: (-r["mean"], r["trial"]))
    chosen = ranked[0]
    chosen_cfg = follow_up(cfg, {"chosen": chosen["values"]})
    result = {
        "trials": rows,
        "ranking": [r["trial"] for r in ranked],
        "chosen": chosen,
        "seeds": _seeds(cfg),
        "validation_questions": _validation_n(ctx),
        "validation_groups": len({q.group or q.id for q in load_task(cfg.task).validation}),
    }
    atomic_write_json(ctx.out / RESULTS, result)
    atomic_write_text(ctx.out / REPORT, _report(result))
    atomic_write_text(ctx.out / CHOSEN, _chosen_yaml(chosen_cfg, chosen))
    return {
        "trials": len(rows),
        "chosen": chosen["values"],
        "chosen_mean": chosen["mean"],
        "ranking": result["ranking"],
    }


def _validation_n(ctx: RunContext) -> int | None:
    for m in ctx.manifests.values():
        val = m.get("stats", {}).get("validation") or []
        if val:
            return int(val[0]["n"])
    return None


def _chosen_yaml(chosen_cfg: Config, chosen: dict[str, Any]) -> str:
    head = (
        f"# distill sweep: the chosen trial {chosen['trial']} ({chosen['values']}), mean "
        f"validation accuracy {chosen['mean']}.\n# Run it: distill run --config chosen.yaml\n"
    )
    return head + yaml.safe_dump(to_dict(chosen_cfg), sort_keys=False)


def _report(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        "# Sweep",
        "",
        f"{len(result['trials'])} trials x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
        f"ranked by validation accuracy ({result['validation_questions']} questions held out "
        "of train; the eval split is not read).",
        "",
        "| rank | trial | settings | mean | sd | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|" + "---|" * (5 + len(seeds)),
    ]
    by_id = {r["trial"]: r for r in result["trials"]}
    for rank, i in enumerate(result["ranking"], 1):
        r = by_id[i]
        settings = ", ".join(f"{k}={v}" for k, v in r["values"].items()) or "(as configured)"
        per = " | ".join(f"{r['per_seed'][str(s)]['accuracy']:.3f}" for s in seeds)
        sd = "-" if r["sd"] is None else f"{r['sd']:.3f}"
        lines.append(f"| {rank} | {i} | {settings} | {r['mean']:.3f} | {sd} | {per} |")
    lines += ["", f"Chosen: trial {result['chosen']['trial']}; its config is `chosen.yaml`."]
    margin = _margin(result)
    return "\n".join([*lines, *([""] if margin else []), margin]) + "\n"


def _margin(result: dict[str, Any]) -> str:
    """How far the chosen trial leads the next, against what the validation split can resolve:
    the half-width of the chosen mean's 95% Wilson interval on the validation questions, or,
    when they come in fewer split groups (facts, passages), on the groups: answers within a
    group move together, so n questions from g groups resolve little more than g would."""
    n, ranking = result["validation_questions"], result["ranking"]
    if not n or len(ranking) < 2:
        return ""
    groups = result.get("validation_groups") or n
    units = min(groups, n)
    by_id = {r["trial"]: r for r in result["trials"]}
    best, next_ = by_id[ranking[0]], by_id[ranking[1]]
    lead = best["mean"] - next_["mean"]
    half = noise(best["mean"], units)
    on = (
        f"{n} questions"
        if units == n
        else (
            f"{n} questions from {units} split groups (taken on the groups: answers within a group "
            "move together)"
        )
    )
    text = (
        f"The chosen trial leads trial {next_['trial']} by {100 * lead:.1f} points "
        f"({lead * n:.1f} of {n} questions); the chosen mean's 95% interval on {on} is about "
        f"±{100 * half:.1f} points."
    )
    if lead < half:
        text += (
            " That lead is inside it: this split cannot tell these trials apart. More seeds "
            "(sweep.seeds) or more validation groups (task.validation_fraction, "
            "task.max_validation) would."
        )
    return text


def follow_up(cfg: Config, stats: dict[str, Any]) -> Config:
    """After the ranking: the chosen config, whose chain the runner runs to eval, once."""
    return dataclasses.replace(with_values(cfg, stats["chosen"]), sweep=type(cfg.sweep)())


def ends_chain(cfg: Config) -> bool:
    """A config with a sweep grid asks for this chain too: `distill status` lists it."""
    return bool(cfg.sweep.grid)


def progress(cfg: Config, out: Any) -> str:
    n = len(trials(cfg)) * len(_seeds(cfg))
    return f"{n} trial trainings (each a train stage: see above)"


def summary(stats: dict[str, Any], out: Any) -> str:
    return (out / REPORT).read_text() if (out / REPORT).is_file() else ""
