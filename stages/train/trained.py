"""The full-size student first (`trained`): a train stage can cut its student from the student
this config trains without a cut (train.cut.source: trained) and have it as the teacher in the
loop (train.features.teacher: trained). That student is the train stage of the same config
with objective sft and no cut: an extra input, keyed and cached like any train stage (the
default run's student, where the rest of the config is the default's), so the compression
recipe trains it once and a second cut of it trains only the cut.

    trained_input(cfg)        the extra input, or none
    resolve_trained(cfg, d)   the config with `trained` replaced by the trained dir `d`: the cut
                              built from it (cached under its weights and the layers) as
                              train.student, no cut left, `trained` as a teacher replaced by d
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import TRAINED, Config, CutConfig
from pipeline.models import model_identity
from pipeline.stage import ExtraInput
from stages.train.cut import cut_from

TRAINED_INPUT = "full"  # the extra input's label (`distill status` shows it)


def trained_input(cfg: Config, stage: str) -> list[ExtraInput]:
    """The full-size SFT student of this config, when the train stage needs it."""
    t = cfg.train
    if not t.needs_trained:
        return []
    full = dataclasses.replace(cfg, train=t.full_size())
    return [ExtraInput(TRAINED_INPUT, stage, full)]


def resolve_trained(cfg: Config, trained: Path) -> Config:
    """`cfg` with the trained student in place of the name `trained`."""
    t = cfg.train
    student, cut = t.student, t.cut
    if cut.active and cut.source == TRAINED:
        student = str(cut_from(cfg, trained, model_identity(trained)))
        cut = CutConfig()
    f = t.features
    named = [str(trained) if ref == TRAINED else ref for ref in f.teachers]
    teacher: str | list[str] = named if isinstance(f.teacher, list) else (named or [""])[0]
    features = dataclasses.replace(f, teacher=teacher)
    return dataclasses.replace(
        cfg, train=dataclasses.replace(t, student=student, cut=cut, features=features)
    )
