"""The `train:` sub-sections of a smaller student: the cut of a model it starts from
(train.cut) and the teacher's features it learns from (train.features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.fields import ConfigError, check_fields, knob

TRAINED = "trained"  # the full-size student the same config trains first (cut, features)


@dataclass(frozen=True)
class FeaturesConfig:
    """objective: features: the teacher in the training loop
    (stages/train/objectives/features.py). The logit term is train.kd's (alpha, temperature,
    divergence) on the full vocabulary."""

    teacher: str | list[str] = knob(
        "",
        doc="the teacher run beside the student while it trains: a local model dir sharing the "
        "student's vocabulary, `trained` (the full-size student this config trains first with "
        "objective sft), or a list of them, fused in the logit term; '' = teacher.model",
    )
    weights: list[float] = knob(
        factory=list,
        doc="with several teachers: each one's weight in the fused distribution (a weighted "
        "mean of their probabilities at temperature T); [] = equal",
    )
    hidden: float = knob(0.0, doc="weight of the hidden-state term", ge=0)
    hidden_loss: Literal["mse", "cosine"] = knob(
        "mse", doc="mse: mean squared error per element; cosine: mean of 1 - cosine"
    )
    layer_map: list[list[int]] = knob(
        factory=list,
        doc="[[student layer, teacher layer], ...] for the hidden and attention terms, from 0; "
        "[] = student layer i to teacher layer round((i+1) Lt/Ls) - 1",
    )
    attention: float = knob(0.0, doc="weight of the attention-map term", ge=0)
    relation: float = knob(
        0.0, doc="weight of the relation term (RKD distance + angle between samples)", ge=0
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if isinstance(self.teacher, list):
            for i, ref in enumerate(self.teacher):
                if not isinstance(ref, str) or not ref.strip():
                    raise ConfigError(
                        f"{ref!r}: expected a model dir or `trained`", f"teacher[{i}]"
                    )
            if not self.teacher:
                raise ConfigError(
                    "an empty list: name a teacher, or give '' for teacher.model", "teacher"
                )
            if len(set(self.teacher)) < len(self.teacher):
                raise ConfigError(
                    "a teacher named twice: give it a larger weight instead", "teacher"
                )
        n = len(self.teachers) or 1
        if self.weights and len(self.weights) != n:
            raise ConfigError(f"{len(self.weights)} weights for {n} teacher(s)", "weights")
        if any(
            not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 for w in self.weights
        ) or (self.weights and sum(self.weights) <= 0):
            raise ConfigError(f"{self.weights}: weights are >= 0, and not all 0", "weights")
        for i, pair in enumerate(self.layer_map):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in pair)
            ):
                raise ConfigError(
                    f"{pair!r}: expected [student layer, teacher layer], both from 0",
                    f"layer_map[{i}]",
                )

    @property
    def teachers(self) -> list[str]:
        """The teachers named, in order; [] = teacher.model."""
        if isinstance(self.teacher, list):
            return list(self.teacher)
        return [self.teacher] if self.teacher else []

    def fusion(self) -> list[float]:
        """Each teacher's share of the fused distribution, summing to 1."""
        n = len(self.teachers) or 1
        w = [float(x) for x in self.weights] or [1.0] * n
        return [x / sum(w) for x in w]


@dataclass(frozen=True)
class CutConfig:
    """A smaller student cut from train.student before training: depth pruning (DistilBERT kept
    every other layer of BERT) and width pruning of the MLPs (Minitron). Built once, cached
    under its source's identity and this recipe (stages/train/cut.py)."""

    keep_every: int = knob(
        0, doc="keep layers 0, k, 2k, ... of train.student (2: every other); 0 = no cut", ge=0
    )
    layers: list[int] = knob(
        factory=list,
        doc="the layers of train.student to keep, ascending, e.g. [0, 2, 4, 5]; [] = none given",
    )
    mlp_shrink: int = knob(
        0,
        doc="width pruning: keep 1/k of every layer's MLP neurons, those most active on the "
        "task's train questions (Minitron's activation score); k must divide the MLP width; "
        "0 = no width cut",
        ge=0,
        key_when_set=True,  # keys made before it existed stay as they were
    )
    source: Literal["student", "trained"] = knob(
        "student",
        doc="what the cut is taken from: student = train.student's weights; trained = the "
        "full-size student this config trains first (objective sft, no cut: a stage of its "
        "own, cached; train.features.teacher: trained names the same student)",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.keep_every == 1:
            raise ConfigError("1 keeps every layer: no cut; give 2 or more, or 0", "keep_every")
        if self.mlp_shrink == 1:
            raise ConfigError("1 keeps every neuron: no cut; give 2 or more, or 0", "mlp_shrink")
        if self.keep_every and self.layers:
            raise ConfigError("give keep_every or layers, not both", "layers")
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.layers):
            raise ConfigError(f"{self.layers}: layer numbers count from 0", "layers")
        if list(self.layers) != sorted(set(self.layers)):
            raise ConfigError(f"{self.layers}: each layer once, in ascending order", "layers")
        if self.source == TRAINED and not self.active:
            raise ConfigError(
                "a cut of the trained student needs keep_every, layers or mlp_shrink", "source"
            )

    @property
    def active(self) -> bool:
        return bool(self.keep_every or self.layers or self.mlp_shrink)

    def kept(self, num_layers: int) -> list[int]:
        """The source layers the cut keeps, or a ConfigError naming the key."""
        if not (self.keep_every or self.layers):
            return list(range(num_layers))  # a width cut alone keeps every layer
        if self.keep_every:
            if self.keep_every >= num_layers:
                raise ConfigError(
                    f"{self.keep_every} on a {num_layers}-layer model keeps one layer; give a "
                    "smaller step",
                    "train.cut.keep_every",
                )
            return list(range(0, num_layers, self.keep_every))
        bad = [i for i in self.layers if i >= num_layers]
        if bad:
            raise ConfigError(
                f"layer {bad[0]} of a {num_layers}-layer model (layers count from 0)",
                "train.cut.layers",
            )
        return list(self.layers)
