"""`Config`, the whole config: one field per section and the rules that tie sections together.

Each section is in a module of its own: task, teacher (with serve), generate (with sampling),
filter, train and eval. A rule that reads two sections (a teacher list's shared trace
convention, soft labels, max_tokens against a served model's context) is checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.eval import EvalConfig
from pipeline.config.filter import FilterConfig
from pipeline.config.generate import BudgetConfig, GenerateConfig
from pipeline.config.sweep import SweepConfig
from pipeline.config.task import TaskConfig
from pipeline.config.teacher import TeacherConfig
from pipeline.config.train import TrainConfig
from pipeline.fields import ConfigError, check_fields, expand, knob, runtime, short, template_file

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True)
class Config:
    run: str = runtime(
        "default", doc="run name (letters, digits, . _ + -): outputs go under runs_dir/run/"
    )
    runs_dir: str = runtime("runs", doc="where runs live")
    cache_dir: str = runtime("", doc="where converted models live; '' = ~/.cache/distill")
    student_template: str = knob(
        "student_zeroshot.j2", doc="zero-shot prompt the student sees: a file in prompts/ or a path"
    )
    task: TaskConfig = knob(factory=TaskConfig, doc="the questions and the held-out split")
    teacher: TeacherConfig = knob(
        factory=TeacherConfig,
        doc="the model that writes samples; with teachers:, what each of them inherits",
    )
    teachers: list[TeacherConfig] = knob(
        factory=list,
        doc="several teachers, cheapest first: each a teacher: section applied over teacher: "
        "(e.g. [{fewshot: 0}, {fewshot: 1}]); generate.combine says how they share the "
        "questions; eval's teacher is the last; [] = teacher alone",
        key_when_set=True,
    )
    generate: GenerateConfig = knob(factory=GenerateConfig, doc="how many samples, and how")
    filter: FilterConfig = knob(factory=FilterConfig, doc="which samples the student learns from")
    train: TrainConfig = knob(factory=TrainConfig, doc="fine-tuning the student")
    eval: EvalConfig = knob(factory=EvalConfig, doc="measuring teacher, base and student")
    budget: BudgetConfig = runtime(
        factory=BudgetConfig,
        doc="a cap on the tokens of every teacher call of the run (generate, on-policy scoring, "
        "eval's teacher answers and draft scores): a call that could cross it is not sent and "
        "the stage stops with exit code 3, keeping everything asked",
    )
    seeds: list[int] = knob(
        factory=list,
        doc="for `distill seeds`: besides the chain as configured, run it once per seed listed "
        "(each sets generate.sampling.seed and train.seed) and report every model's mean and "
        "spread across all of them",
    )
    sweep: SweepConfig = knob(
        factory=SweepConfig,
        doc="for `distill sweep`: train settings to try on the cached dataset",
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("a seed is listed twice", "seeds")
        if any(not 0 <= x < 2**31 for x in self.seeds):
            raise ConfigError("seeds must be in [0, 2**31)", "seeds")
        if not RUN_NAME.fullmatch(self.run) or self.run in (".", ".."):
            raise ConfigError(
                f"{self.run!r} is not a plain name; use letters, digits and . _ + - "
                "(no '/', no '..', at most 128 characters)",
                "run",
            )
        if not self.runs_dir.strip():
            raise ConfigError("must not be empty", "runs_dir")
        expand(self.runs_dir, "runs_dir")
        expand(self.cache_dir, "cache_dir")
        template_file(self.student_template, "student_template")
        self._check_teachers()
        self._check_soft_labels()
        # A request that cannot fit a model we serve fails only once it is sent: check here.
        checked = [("eval.sampling", self.eval.sampling, "eval.serve", self.eval.serve)]
        for where, t in self._teacher_keys():
            if not t.urls():
                for key in ("generate.sampling", "eval.sampling"):
                    sampling = self.generate.sampling if key[0] == "g" else self.eval.sampling
                    checked.append((key, sampling, f"{where}.serve", t.serve))
        for key, sampling, where, serve in checked:
            if sampling.max_tokens >= serve.max_model_len:
                raise ConfigError(
                    f"{sampling.max_tokens} leaves no room for the prompt within "
                    f"{where}.max_model_len ({serve.max_model_len}); lower it or raise that",
                    f"{key}.max_tokens",
                )

    def teacher_list(self) -> list[TeacherConfig]:
        """The teachers generate asks, cheapest first: `teachers`, or `teacher` alone."""
        return list(self.teachers) or [self.teacher]

    def lead_teacher(self) -> TeacherConfig:
        """The teacher eval measures (the last, strongest, of a list), and whose trace
        convention every stage reads (all teachers of a list share it)."""
        return self.teacher_list()[-1]

    def teacher_labels(self) -> list[str]:
        """What reports and rows call each teacher: its label, else its name or model, with
        #position where two would read alike."""
        base = [t.label or t.name or t.model for t in self.teacher_list()]
        return [
            b if t.label or base.count(b) == 1 else f"{b}#{i + 1}"
            for i, (t, b) in enumerate(zip(self.teacher_list(), base, strict=True))
        ]

    def _teacher_keys(self) -> list[tuple[str, TeacherConfig]]:
        if not self.teachers:
            return [("teacher", self.teacher)]
        return [(f"teachers[{i}]", t) for i, t in enumerate(self.teachers)]

    def _check_teachers(self) -> None:
        for i, t in enumerate(self.teachers):
            if not isinstance(t, TeacherConfig):  # built in code, not from a mapping
                raise ConfigError(f"expected a teacher section, got {short(t)}", f"teachers[{i}]")
        labels = self.teacher_labels()
        if len(set(labels)) != len(labels):
            raise ConfigError(f"two teachers share the label {labels[0]!r}", "teachers")
        for i, t in enumerate(self.teachers[1:], 1):
            first = self.teachers[0]
            for name in ("reasoning", "think_tags"):
                if getattr(t, name) != getattr(first, name):
                    raise ConfigError(
                        f"{getattr(t, name)!r} differs from teachers[0]'s; the teachers of one "
                        "run share a trace convention (set it once under teacher:)",
                        f"teachers[{i}].{name}",
                    )
        if self.filter.prefer_teacher and self.filter.prefer_teacher not in labels:
            raise ConfigError(
                f"{self.filter.prefer_teacher!r} is not a teacher's label (labels: "
                f"{', '.join(labels)})",
                "filter.prefer_teacher",
            )
        if len(self.teachers) > 1 and self.generate.logprobs:
            raise ConfigError(
                "soft labels come from one teacher; with several, turn them off (0) or list one",
                "generate.logprobs",
            )

    def _check_soft_labels(self) -> None:
        k = self.generate.logprobs
        if self.train.objective == "kd" and not k:
            raise ConfigError(
                "kd needs the teacher's soft labels; set generate.logprobs (e.g. 20)",
                "train.objective",
            )
        lead = self.lead_teacher()
        model = lead.model
        if k and lead.urls() and model != "smollm2-135m" and not Path(model).is_dir():
            raise ConfigError(
                "soft labels are stored by token id, checked against the teacher's "
                "vocabulary: with endpoints, set teacher.model to a local dir holding its "
                f"tokenizer (now {model!r})",
                "generate.logprobs",
            )
