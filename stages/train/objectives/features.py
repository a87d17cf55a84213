"""train.objective: features: the teacher (or several) in memory beside the student in the
trainer's loop, no gradient, the student's vocabulary: full-vocabulary logits (train.kd), hidden
states, attention, relations (train.features; the terms are stages/train/losses/features.py).
Here: which teachers are in the loop and which of their layers each student layer is held
against, checked when the train stage is keyed, before anything runs; and the teachers loaded
beside the student once its trainer is built. Their weights are in the stage's key."""

from __future__ import annotations

from typing import Any

from pipeline.config import Config
from pipeline.stage import KeyParts
from stages.train.losses.trainers import features_trainer_class
from stages.train.objectives.objective import Objective, OnKept
from stages.train.prepared import Table


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
    from stages.shared.models import local_model
    from stages.shared.softlabels import vocab_hash
    from stages.train.cut import cut_layers, num_layers

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


def key_parts(cfg: Config) -> KeyParts:
    """Each teacher's weights; another vocabulary or a bad layer map is refused here, before
    anything runs."""
    check_pair(cfg)
    return KeyParts(config={}, extra={"feature_teacher": teacher_identities(cfg)})


def configure(cfg: Config, args: Any, dataset: Any) -> Any:
    """Attention maps need the eager kernels."""
    if cfg.train.features.attention > 0:
        args.model_init_kwargs = {**(args.model_init_kwargs or {}), "attn_implementation": "eager"}
    return dataset


def attach(cfg: Config, trainer: Any, soft: Table | None, bf16: bool) -> None:
    """The teachers in memory beside the student (no gradient), the layer map, and a projection
    per mapped layer where the widths differ."""
    import torch
    from transformers import AutoModelForCausalLM

    f = cfg.train.features
    teachers = []
    for n, d in enumerate(teacher_dirs(cfg)):
        # only the first teacher's attention maps are compared: it alone needs the eager kernels
        extra = {"attn_implementation": "eager"} if f.attention > 0 and n == 0 else {}
        m = AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.bfloat16 if bf16 else torch.float32, **extra
        )
        teachers.append(m.requires_grad_(False).eval().to(trainer.accelerator.device))
    teacher = teachers[0]
    trainer.teacher, trainer.others, trainer.fusion = teacher, teachers[1:], f.fusion()
    trainer.kd_cfg, trainer.fx_cfg = cfg.train.kd, f
    trainer.layer_map = check_pair(cfg)
    s_width, t_width = trainer.model.config.hidden_size, teacher.config.hidden_size
    proj = torch.nn.ModuleDict()
    if f.hidden > 0 and s_width != t_width:
        for i, j in trainer.layer_map:
            proj[f"{i}_{j}"] = torch.nn.Linear(s_width, t_width)
    trainer.proj = proj.to(trainer.accelerator.device)


OBJECTIVE = Objective(
    name="features",
    key_parts=key_parts,
    kept=OnKept(
        trainer_class=lambda use_cpu: features_trainer_class(),
        configure=configure,
        attach=attach,
    ),
)
