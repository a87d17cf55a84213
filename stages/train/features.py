"""objective features: which teachers are in the loop and which of their layers each student layer
is held against (the loss terms are stages/train/losses/features.py). Everything here is
checked when the train stage is keyed, before anything runs."""

from __future__ import annotations

from typing import Any


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer i to teacher layer round((i + 1) * Lt / Ls) - 1: the last to the last,
    the others spread evenly (a cut of every k-th layer maps each to its depth's peer)."""
    return [
        (i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)
    ]


def teacher_refs(cfg: Any) -> list[tuple[str, str]]:
    """(reference, its config key) of each teacher in the loop: train.features.teacher's, or
    teacher.model. `trained` stays a name here: the train stage resolves it (resolve_trained)."""
    named = cfg.train.features.teachers
    if not named:
        return [(cfg.teacher.model, "teacher.model")]
    if len(named) == 1:
        return [(named[0], "train.features.teacher")]
    return [(ref, f"train.features.teacher[{i}]") for i, ref in enumerate(named)]


def teacher_dirs(cfg: Any) -> list[Any]:
    """The teachers' local dirs. `trained` (not yet trained when the stage is keyed) stands as
    train.student: the same vocabulary and depth, which is all check_pair reads."""
    from pipeline.config import TRAINED
    from stages.shared.models import local_model

    out = []
    for ref, key in teacher_refs(cfg):
        if ref == TRAINED:
            ref, key = cfg.train.student, "train.student"
        out.append(local_model(ref, cfg.cache_dir, key=key))
    return out


def teacher_identities(cfg: Any) -> str | list[str]:
    """For the stage's key: each teacher's weights (`trained` by name: its stage's key is an
    input of this one); one teacher as a string, as keys had it before fusion."""
    from pipeline.config import TRAINED
    from pipeline.models import model_identity

    ids = [
        TRAINED if ref == TRAINED else model_identity(d)
        for (ref, _), d in zip(teacher_refs(cfg), teacher_dirs(cfg), strict=True)
    ]
    return ids[0] if len(ids) == 1 else ids


def checked_layer_map(cfg: Any, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """train.features.layer_map (or the default one) against both depths; a ConfigError naming
    the key for a layer either model lacks."""
    from pipeline.fields import ConfigError

    given = [tuple(p) for p in cfg.train.features.layer_map]
    pairs = given or default_layer_map(student_layers, teacher_layers)
    for n, (i, j) in enumerate(pairs):
        if i >= student_layers or j >= teacher_layers:
            raise ConfigError(
                f"[{i}, {j}]: the student has {student_layers} layers and the teacher "
                f"{teacher_layers} (from 0)",
                f"train.features.layer_map[{n}]",
            )
    return pairs  # type: ignore[return-value]


def check_pair(cfg: Any) -> list[tuple[int, int]]:
    """The layer map for the student training starts from (train.student, or its cut: the
    same vocabulary, the cut's depth; the cut itself is not built here) and the first teacher
    in the loop (the hidden, attention and relation terms are the first teacher's; the logit
    term fuses them all); a UserError, in one line, for a teacher with another vocabulary or
    a map either model cannot take. Called when the train stage is keyed, before anything runs."""
    from pipeline.errors import UserError
    from stages.shared.cut import cut_layers, num_layers
    from stages.shared.models import local_model
    from stages.shared.softlabels import vocab_hash

    source = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    dirs = teacher_dirs(cfg)
    vocab = vocab_hash(source)
    for t_dir in dirs:
        if vocab_hash(t_dir) != vocab:
            raise UserError(
                f"train.objective features: the teacher {t_dir} and the student {source} have "
                "different vocabularies; the logit, hidden and attention terms compare them "
                "token by token: give teachers of the student's family (train.features.teacher)"
            )
    kept = cut_layers(cfg)
    depth = len(kept) if kept is not None else num_layers(source)
    return checked_layer_map(cfg, depth, num_layers(dirs[0]))
