"""The update of an on-policy round: the rollouts as training rows, and each scored token's
numbers in one table the loss reads.

A row is the student's prompt ids (its chat template, as vLLM rendered the prompt it sampled
from) followed by the ids it sampled, with labels -100 on the prompt: the trainer's own row form
(stages/train/preflight.py), so batching, padding and packing are the SFT path's. Each completion
position's `kd_index` names its row in the table, -1 elsewhere, as for objective kd (the same
collator lays it out). The table holds, per scored token, the rollout's logprob of it and its
advantage (stages/train/onpolicy/loss.py); numpy is imported by the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stages.train.onpolicy.parts import prompt_ids
from stages.train.prepared import IGNORE

if TYPE_CHECKING:
    import numpy as np


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
        if a is None:
            continue
        ids = list(r["completion_ids"])
        if len(a) != len(ids) or not ids:
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
