"""train.objective: onpolicy: the student writes, the teacher scores every token it wrote, the
student learns from its own text, in rounds (train.onpolicy). stage.py is the train stage's part,
rounds.py the rounds, parts.py the asking, align.py the cross-tokenizer credit (crossvocab.py
its end of turn), update.py the learning (the loss is stages/train/losses/policy.py's, or with
loss: topk the divergence's).

Its rounds live beside the train key dirs (layout.ROUNDS), shared by every train key of the run
and under its lock; its key holds what the rounds ask with (the teacher, both prompts, the
rollouts' stops); it starts from the SFT student of the same config (an extra input) or from
train.student as it is."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import Config, OnPolicyConfig
from pipeline.config.train import TrainConfig
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.prompts import template_bytes
from pipeline.stage import ExtraInput, KeyParts
from stages.shared.layout import ROUNDS, ROUNDS_LOCK, shared_dir
from stages.train.objectives.objective import Objective
from stages.train.objectives.onpolicy.rounds import SCORING, teacher_calls
from stages.train.objectives.onpolicy.stage import SFT_INPUT, train_onpolicy


def key_parts(cfg: Config) -> KeyParts:
    """What its rounds ask with: the teacher, both prompts, the rollouts' stops."""
    config = {
        "onpolicy_asks": {
            "teacher": teacher_key_config(cfg.teacher),
            "student_template": cfg.student_template,
            "stop": list(cfg.eval.sampling.stop),
        }
    }
    extra = {
        "teacher_identity": teacher_identity(cfg.teacher, cfg.cache_dir),
        # select: best counts the SFT start as round 0: a dir cached before that chose among
        # the rounds only, and must not pass for one that did
        "select_from": "start and rounds",
        "scoring": SCORING,
        "templates": template_bytes(cfg.teacher.template) + template_bytes(cfg.student_template),
    }
    return KeyParts(config=config, extra=extra)


def extra_inputs(cfg: Config, stage: str) -> list[ExtraInput]:
    """From the SFT student: the train stage of the same config with objective sft."""
    t = cfg.train
    if t.onpolicy.start != "sft":
        return []
    sft = dataclasses.replace(t, objective="sft", onpolicy=OnPolicyConfig())
    return [ExtraInput(SFT_INPUT, stage, dataclasses.replace(cfg, train=sft))]


def locks(cfg: Config, out: Path) -> list[Path]:
    """The rounds, shared by every train key of the run."""
    return [shared_dir(out) / ROUNDS / ROUNDS_LOCK]


def card(t: TrainConfig) -> str:
    op = t.onpolicy
    return (
        f" ({op.rounds} rounds from {op.start}: {op.questions} questions x {op.n} samples a "
        f"round, loss {op.loss}, learning rate {op.learning_rate}, top-{op.k}, teacher hint "
        f"{op.teacher_hint}; a round per 'step' below)"
    )


OBJECTIVE = Objective(
    name="onpolicy",
    key_parts=key_parts,
    # when loss's default became topk (issue 50), a stage trained under reverse_kl, the old
    # default, would otherwise have passed for one of the new
    keyed_section="onpolicy",
    extra_inputs=extra_inputs,
    locks=locks,
    shared=(ROUNDS,),
    trains=train_onpolicy,
    card=card,
    teacher_calls=teacher_calls,
)
