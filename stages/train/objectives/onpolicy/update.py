"""The update of an on-policy round: the rollouts as training rows, and each scored token's
numbers in one table the loss reads.

A row is the student's prompt ids (its chat template, as vLLM rendered the prompt it sampled
from) followed by the ids it sampled, with labels -100 on the prompt: the trainer's own row form
(stages/train/preflight.py), so batching, padding and packing are the SFT path's. Each completion
position's `kd_index` names its row in the table, -1 elsewhere, as for objective kd (the same
collator lays it out). The table holds, per scored token, the rollout's logprob of it and its
advantage (stages/train/losses/policy.py); numpy is imported by the function.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.calls import prompt_ids
from pipeline.config import Config, KDConfig
from pipeline.config.train import TrainConfig
from pipeline.hardware import native_bf16
from pipeline.records import atomic_write_json
from stages.shared.layout import MODEL
from stages.train.prepared import IGNORE

if TYPE_CHECKING:
    import numpy as np

UPDATE_FILE = "update.json"


def update_batches(t: TrainConfig) -> tuple[int, int]:
    """(rollouts a batch, batches a step) of a round's update: train.onpolicy.batch, else
    SFT's train.batch_size and train.grad_accum (the config checked batch's multiple)."""
    b = t.onpolicy.batch
    if not b:
        return t.batch_size, t.grad_accum
    per = min(b, t.batch_size)
    return per, b // per


@dataclass
class RoundTable:
    """Per scored token of a round, stacked: a row's `kd_index` points into it."""

    rollout_logprobs: np.ndarray  # float32 [P]
    advantages: np.ndarray  # float32 [P]


def update_rows(
    tok: Any, rollouts: list[dict[str, Any]], advantages: dict[str, list[float]]
) -> tuple[list[dict[str, list[int]]], RoundTable]:
    """Training rows for the rollouts that have advantages (one per completion token), in the
    order given, and their table."""
    import numpy as np

    rows, old, adv = [], [], []
    base = 0
    for r in rollouts:
        a = advantages.get(r["id"])
        ids = list(r["completion_ids"])
        if a is None or not ids:  # not scored: nothing to learn from
            continue
        if len(a) != len(ids):
            raise ValueError(f"rollout {r['id']}: {len(a)} advantages for {len(ids)} tokens")
        prompt = prompt_ids(tok, r["messages"])
        n = len(prompt)
        index = [-1] * n + list(range(base, base + len(ids)))
        rows.append({"input_ids": prompt + ids, "labels": [IGNORE] * n + ids, "kd_index": index})
        old += r["logprobs"]
        adv += a
        base += len(ids)
    table = RoundTable(np.asarray(old, np.float32), np.asarray(adv, np.float32))
    return rows, table


def update(
    cfg: Config, r: int, student: Path, tok: Any, rollouts: list[dict], scored: dict, rd: Path
) -> dict[str, Any]:
    """Part (c): one pass over the rollouts from `student`, the result written whole (with its
    stats, update.json) then renamed to rd/model. A kill before the rename redoes the pass from
    `student`, which is on disk; after it, the pass is done."""
    import torch
    from datasets import Dataset

    from stages.train.args import quiet_libraries, sft_config
    from stages.train.losses.trainers import KDCollator, kd_trainer_class, onpolicy_trainer_class

    quiet_libraries()
    op = cfg.train.onpolicy
    rows, table = update_rows(tok, rollouts, {k: v["advantages"] for k, v in scored.items()})
    use_cpu = not torch.cuda.is_available()
    bf16 = bool(cfg.train.bf16 and native_bf16(gpu=not use_cpu))
    # not the stage's run (its steps restart each round): the stage reports the rounds
    args = sft_config(cfg, rd, use_cpu=use_cpu, bf16=bf16, report=False)
    args.learning_rate, args.num_train_epochs, args.max_steps = op.learning_rate, 1.0, -1
    args.seed, args.data_seed = cfg.train.seed + r, cfg.train.seed + r
    args.per_device_train_batch_size, args.gradient_accumulation_steps = update_batches(cfg.train)
    args.save_strategy, args.remove_unused_columns, args.packing = "no", False, False
    topk = op.loss == "topk"
    cls = kd_trainer_class() if topk else onpolicy_trainer_class()
    trainer = cls(
        model=str(student), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.data_collator = KDCollator(trainer.data_collator)
    if topk:  # reverse KL to the teacher on its top k (plus the rest as one bucket)
        trainer.kd_cfg = KDConfig(alpha=1.0, divergence="reverse", tail="bucket")
        ids, lps = _top_table(rollouts, scored)
        trainer.kd_table = (torch.from_numpy(ids), torch.from_numpy(lps))
    else:
        trainer.op_table = tuple(
            torch.from_numpy(t) for t in (table.rollout_logprobs, table.advantages)
        )
    result = trainer.train()
    out = {"loss": round(float(result.training_loss), 6), "steps": trainer.state.global_step}
    tmp, dest = rd / "model.partial", rd / MODEL
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / UPDATE_FILE, out)  # with the weights: one rename makes both durable
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return out


def read_update(rd: Path) -> dict[str, Any] | None:
    """The update's stats when its weights are in place (a kill after the rename left them)."""
    try:
        got = json.loads((rd / MODEL / UPDATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return got if (rd / MODEL / "config.json").is_file() else None


def validate(cfg: Config, r: int, rd: Path, tok: Any) -> dict[str, Any]:
    """The round's student on the validation split (stages/train/validation.py), from the
    weights on disk: they are linked in as the candidate, so nothing is saved twice and a kill
    here resumes the answers, not the update."""
    from stages.train.validation import Validator

    validator = Validator.of(cfg, rd, tok)
    if validator is None:
        return {}
    here = validator.candidate(r) / MODEL
    if not validator.measured(r) and not (here / "config.json").is_file():
        here.parent.mkdir(parents=True, exist_ok=True)
        place_model(rd / MODEL, here)
    got = validator.measure(None, r, r)
    validator.drop_weights()
    return {
        "validation_accuracy": got["accuracy"],
        "validation_n": got["n"],
        "validation_seconds": round(validator.seconds, 2),
    }


def _top_table(rollouts: list[dict], scored: dict) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top k per scored token, stacked in the order update_rows lays them out."""
    import numpy as np

    ids = [scored[r["id"]]["top"][0] for r in rollouts if r["id"] in scored]
    lps = [scored[r["id"]]["top"][1] for r in rollouts if r["id"] in scored]
    return np.concatenate(ids).astype(np.int32), np.concatenate(lps).astype(np.float32)


def place_model(src: Path, dest: Path) -> None:
    """The chosen round's model as the stage's: hard links where the filesystem allows."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, copy_function=os.link)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
