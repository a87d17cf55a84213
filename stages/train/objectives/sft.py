"""train.objective: sft: cross-entropy on the kept text, in the trainer's loop; nothing beside the
train section and the student in its key."""

from __future__ import annotations

from typing import Any

from stages.train.losses.trainers import cpu_trainer_class
from stages.train.objectives.objective import Objective, OnKept


def trainer_class(use_cpu: bool) -> Any:
    """TRL's own SFTTrainer on a GPU (its fused LM-head loss), ours on a CPU (the head on the
    completion positions only)."""
    from trl import SFTTrainer

    return cpu_trainer_class() if use_cpu else SFTTrainer


OBJECTIVE = Objective(name="sft", kept=OnKept(trainer_class=trainer_class))
