"""The train stage under objective onpolicy: its rounds (rounds.py beside this), then
the stage's own outputs, as for SFT: model/ (the last round's student, or the best validated
one), train_log.jsonl (a line per round), loss.png (the round's update loss, the student's
reverse KL to the teacher and its validation accuracy, by round), validation.jsonl and
train_stats.json. matplotlib is imported by the plot."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.records import atomic_write_json, atomic_write_jsonl
from pipeline.stage import RunContext
from pipeline.tasks import load_task
from stages.shared.layout import LOSS_PLOT, MODEL, TRAIN_LOG, TRAIN_STATS, VALIDATION
from stages.train.cut import student_dir
from stages.train.logs import log_line
from stages.train.objectives.onpolicy.rounds import run_rounds
from stages.train.objectives.onpolicy.update import place_model, update_batches
from stages.train.tracking import report_rounds

SFT_INPUT = "sft"  # the extra input holding the SFT student of the same config
PER_ROUND = (
    "round",
    "loss",
    "reverse_kl",
    "correct",
    "verified",
    "validation_accuracy",
    "rollouts",
    "rollout_tokens",
    "scored_tokens",
    "topk_share",
    "steps",
    "seconds",
)


def start_model(cfg: Config, ctx: RunContext) -> Path:
    if cfg.train.onpolicy.start == "sft":
        return ctx.inputs[SFT_INPUT] / MODEL
    return student_dir(cfg)


def train_onpolicy(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Run (or read back) every round; put the chosen round's student in place."""
    t0 = time.monotonic()
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    log_line(round_cost(cfg, len(load_task(cfg.task).train)))
    rounds = run_rounds(cfg, out, start_model(cfg, ctx), ctx.input_keys)
    measured = [r for r in rounds if r.get("validation_accuracy") is not None]
    chosen = choose(rounds, _start_round(cfg, ctx), cfg.train.select)
    place_model(Path(chosen["dir"]) / MODEL, out / MODEL)
    which = "the SFT start (round 0)" if chosen["round"] == 0 else f"round {chosen['round']}"
    log_line(f"the student of {which} of {len(rounds)} rounds is the stage's model")
    per_round = [{k: r[k] for k in PER_ROUND if k in r} for r in rounds]
    atomic_write_jsonl(out / TRAIN_LOG, per_round)
    report_rounds(cfg, out, per_round)
    validation = [
        {
            "step": r["round"],
            "epoch": r["round"],
            "accuracy": r["validation_accuracy"],
            "n": r.get("validation_n", 0),
        }
        for r in measured
    ]
    atomic_write_jsonl(out / VALIDATION, validation)
    plot_rounds(per_round, out / LOSS_PLOT)
    stats: dict[str, Any] = {
        "objective": "onpolicy",
        "rounds": per_round,
        "examples": sum(r.get("rollouts", 0) for r in rounds),
        "steps": sum(r.get("steps", 0) for r in rounds),
        "final_loss": rounds[-1].get("loss"),
        "teacher_tokens_scored": sum(r.get("scored_tokens", 0) for r in rounds),
        "teacher_spend": {  # the rounds' teacher calls, as the run's budget counts them
            k: sum(r.get("teacher_spend", {}).get(k, 0) for r in rounds)
            for k in ("calls", "prompt_tokens", "completion_tokens")
        },
        "rollout_tokens": sum(r.get("rollout_tokens", 0) for r in rounds),
        "seconds_by_part": _summed_seconds(rounds),
        "stage_seconds": round(time.monotonic() - t0, 2),
        "validation": validation,
        "select": cfg.train.select,
        "selected_step": chosen["round"],
        "selected_validation_accuracy": chosen.get("validation_accuracy"),
    }
    atomic_write_json(out / TRAIN_STATS, stats)
    return stats


def round_cost(cfg: Config, train_questions: int) -> str:
    """The stage's opening line: what a round asks for, and how many optimizer steps its update
    takes (the Trainer's: batches of `per` rollouts, `accum` of them a step)."""
    op = cfg.train.onpolicy
    questions = min(op.questions, train_questions)
    rollouts = questions * op.n
    per, accum = update_batches(cfg.train)
    steps = math.ceil(math.ceil(rollouts / per) / accum)
    return (
        f"on-policy: {op.rounds} rounds, each {questions} questions x {op.n} = {rollouts} "
        f"student rollouts of at most {op.max_tokens} tokens and {rollouts} teacher scores, then "
        f"an update of {steps} steps of {per * accum} rollouts at learning rate "
        f"{op.learning_rate}"
    )


def choose(rounds: list[dict], start: list[dict], select: str) -> dict[str, Any]:
    """The stage's model: the last round's, or (select: best) the best validated of the rounds
    and the SFT start as round 0 (the same split and scoring), the earliest of equals, so rounds
    that all validate below the start leave it in place."""
    measured = [r for r in [*start, *rounds] if r.get("validation_accuracy") is not None]
    best = max(measured, key=lambda r: (r["validation_accuracy"], -r["round"]), default=None)
    return best if select == "best" and best else rounds[-1]


def _start_round(cfg: Config, ctx: RunContext) -> list[dict[str, Any]]:
    """The SFT start as round 0, where its stage validated the model it kept; else none (a
    base start is not validated: the rounds alone are chosen from)."""
    if cfg.train.onpolicy.start != "sft":
        return []
    d = ctx.inputs[SFT_INPUT]
    stats = json.loads((d / TRAIN_STATS).read_text()) if (d / TRAIN_STATS).is_file() else {}
    acc = stats.get("selected_validation_accuracy")
    return [] if acc is None else [{"round": 0, "validation_accuracy": acc, "dir": str(d)}]


def _summed_seconds(rounds: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rounds:
        for k, v in (r.get("seconds") or {}).items():
            out[k] = round(out.get(k, 0.0) + v, 2)
    return out


def plot_rounds(rows: list[dict[str, Any]], path: Path) -> None:
    """Update loss, reverse KL and validation accuracy by round, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, key, label in zip(
        axes,
        ("loss", "reverse_kl", "validation_accuracy"),
        ("update loss", "reverse KL to the teacher (nats/token)", "validation accuracy"),
        strict=True,
    ):
        got = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([x for x, _ in got], [y for _, y in got], "o-")
        ax.set_xlabel("round")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
