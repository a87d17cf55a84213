"""The `train:` section: fine-tuning the student, with its LoRA (train.lora), soft-label loss
(train.kd) and on-policy (train.onpolicy) sub-sections; the cut (train.cut) and the teacher's
features (train.features) are in pipeline/config/cut.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import Literal

from pipeline.config.cut import TRAINED, CutConfig, FeaturesConfig
from pipeline.fields import ConfigError, check_fields, expand, knob, runtime
from pipeline.paths import accelerate_config_file, shipped_accelerate_names


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = knob(False, doc="train a LoRA adapter (merged into model/ afterwards)")
    r: int = knob(16, doc="LoRA rank", ge=1)
    alpha: int = knob(32, doc="LoRA alpha (scale = alpha / r)", ge=1)
    dropout: float = knob(0.05, doc="LoRA dropout", ge=0, lt=1)
    target_modules: str | list[str] = knob(
        "all-linear", doc="modules to adapt: all-linear or a list of module names"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.target_modules:
            raise ConfigError("must name modules, or all-linear", "target_modules")


# The schedulers of transformers' SchedulerType that need no extra kwargs and no eval loop
# (tests/pipeline/test_config.py builds each one).
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


@dataclass(frozen=True)
class KDConfig:
    alpha: float = knob(
        0.5,
        doc="weight of the soft-label term: loss = alpha * T^2 * D(teacher^T, student^T) + "
        "(1 - alpha) * cross-entropy on the teacher's tokens",
        ge=0,
        le=1,
    )
    temperature: float = knob(1.0, doc="T: both distributions are softened by it", gt=0, le=100)
    divergence: Literal["forward", "reverse", "jsd"] = knob(
        "forward",
        doc="forward: KL(teacher || student); reverse: KL(student || teacher); jsd: "
        "Jensen-Shannon with weight jsd_beta on the teacher",
    )
    jsd_beta: float = knob(0.5, doc="the teacher's weight in the jsd mixture", gt=0, lt=1)
    tail: Literal["renormalize", "bucket"] = knob(
        "renormalize",
        doc="the mass outside the teacher's top k: renormalize = both distributions are "
        "compared on the top k only, each renormalized; bucket = one extra category holding "
        "the rest of each distribution (exact at T=1)",
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class OnPolicyConfig:
    start: Literal["sft", "base"] = knob(
        "sft",
        doc="the student the first round samples from: sft = this run's student trained with "
        "objective sft first (the same config), base = train.student as it is",
    )
    rounds: int = knob(
        4,
        doc="rounds of rollouts -> teacher scores -> update; raising it runs only the new ones",
        ge=1,
    )
    questions: int = knob(
        64,
        doc="train questions per round (taken in turn from a seeded shuffle of the split)",
        ge=1,
    )
    n: int = knob(2, doc="student samples per question per round (temperature 1)", ge=1)
    max_tokens: int = knob(128, doc="the most tokens a rollout may have", ge=1)
    learning_rate: float = knob(1e-5, doc="peak learning rate of each round's update", gt=0, le=1)
    batch: int = knob(
        0,
        doc="rollouts per optimizer step of a round's update (its steps: questions x n / "
        "batch); 0 = train.batch_size x train.grad_accum, as SFT's. Its own knob so the "
        "rounds' batch moves without moving the SFT start",
        ge=0,
        key_when_set=True,  # keys made before it existed stay as they were
    )
    k: int = knob(
        5,
        doc="the teacher's top-k kept per scored token (loss topk compares on it)",
        ge=1,
        le=100,
    )
    # topk by default: toward a strong teacher of another vocabulary it moved the student more
    # than reverse_kl at two seeds of three (tied at the third), and with one vocabulary it
    # gained at two seeds of three where no reverse_kl round was kept (docs/results/on-policy.md)
    loss: Literal["reverse_kl", "topk"] = knob(
        "topk",
        doc="topk: reverse KL to the teacher on its top k at each position, the rest as one "
        "bucket (another vocabulary: its top k carried to the student's tokens of the same "
        "text where one token on each side covers the same text); reverse_kl: advantage = "
        "teacher logprob - student logprob of each sampled token, importance-sampled against "
        "the rollout",
    )
    teacher_hint: Literal["none", "answer"] = knob(
        "none",
        doc="privileged context in the teacher's scoring prompt, never shown to the student: "
        "answer = the question's gold answer after it (train questions only)",
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrainConfig:
    student: str = knob("smollm2-135m", doc="local HF model dir, or smollm2-135m")
    chat_template: str = knob(
        "",
        doc="Jinja chat template file to train with (and saved with the student), instead of "
        "its own; needed if it has none, or if its own drops a reasoning trace; '' = its own",
    )
    # learning rate, epochs and select as measured on the bundled task and ARC-Easy (README,
    # "Defaults that fit"): two epochs with the better validated epoch kept
    learning_rate: float = knob(1e-4, doc="peak learning rate", gt=0, le=1)
    epochs: float | Literal["auto"] = knob(
        2.0,
        doc="passes over the kept samples; auto: validate at each epoch's end and stop once "
        "validation accuracy has not risen beyond noise for train.patience epochs, at most "
        "train.max_epochs (each epoch is its own cosine to zero, so the student is annealed "
        "wherever it stops; the best measured epoch is kept)",
        gt=0,
    )
    max_epochs: int = knob(
        5, doc="epochs: auto: the most epochs it trains", ge=1, key_when_set=True
    )
    patience: int = knob(
        1,
        doc="epochs: auto: stop after this many epochs without a rise beyond noise (the 95% "
        "interval's half-width on the validation questions, or on their split groups when "
        "fewer)",
        ge=1,
        key_when_set=True,
    )
    max_steps: int = knob(
        -1, doc="optimizer steps; overrides epochs when > 0; -1 = use epochs", ge=-1
    )
    batch_size: int = knob(8, doc="examples per device per step", ge=1)
    grad_accum: int = knob(1, doc="gradient accumulation steps", ge=1)
    max_length: int = knob(512, doc="tokens per example (prompt + completion)", ge=8)
    overlong: Literal["truncate", "drop"] = knob(
        "truncate", doc="what to do with examples over max_length"
    )
    packing: bool = knob(False, doc="pack examples into rows (TRL bfd, padding-free)")
    group_by_length: bool = knob(
        True,
        doc="batches of examples of similar length, in shuffled groups (the Trainer's "
        "group_by_length sampler): less padding, ~12% less time per step on the default run; "
        "false: each batch drawn at random",
    )
    warmup_ratio: float = knob(0.05, doc="share of steps spent warming up", ge=0, lt=1)
    lr_scheduler: Scheduler = knob("cosine", doc="learning-rate schedule")
    weight_decay: float = knob(0.0, doc="AdamW weight decay", ge=0)
    seed: int = knob(42, doc="training seed (data order, init of LoRA)", ge=0)
    bf16: bool = knob(True, doc="bf16 autocast where the hardware supports it")
    gradient_checkpointing: bool = knob(False, doc="trade compute for memory")
    lora: LoraConfig = knob(factory=LoraConfig, doc="LoRA instead of full fine-tuning")
    answer_only: bool = knob(False, doc="ablation: train on 'Answer: X' only, no rationale")
    objective: Literal["sft", "kd", "onpolicy", "features"] = knob(
        "sft",
        doc="sft: cross-entropy on the kept text; kd: the teacher's soft labels too (needs "
        "generate.logprobs), on the teacher's own token ids (train.kd); onpolicy: rounds in "
        "which the student writes, the teacher scores its tokens and it learns (train.onpolicy); "
        "features: the teacher in memory while the student trains: full-vocabulary logits "
        "(train.kd), hidden states, attention, relations (train.features)",
        key_when_set=True,
    )
    kd: KDConfig = knob(
        factory=KDConfig, doc="the soft-label loss of objective: kd", key_when_set=True
    )
    onpolicy: OnPolicyConfig = knob(
        factory=OnPolicyConfig, doc="the rounds of objective: onpolicy", key_when_set=True
    )
    features: FeaturesConfig = knob(
        factory=FeaturesConfig, doc="the terms of objective: features", key_when_set=True
    )
    cut: CutConfig = knob(
        factory=CutConfig,
        doc="train a smaller student cut from train.student (depth pruning) instead of it",
        key_when_set=True,
    )
    validate: bool = knob(
        True,
        doc="measure the student's accuracy on the validation split (task.validation_fraction) "
        "while training: vLLM, greedy, eval's scoring; logged beside the loss",
        key_when_set=True,
    )
    validate_every: int = knob(
        0,
        doc="validate every N optimizer steps; 0 = at each epoch's end",
        ge=0,
        key_when_set=True,
    )
    # Keyed always: before `best` was the default, `last` was, and keys left it out; a stage dir
    # cached then holds the last step's weights, which must not pass for the best's.
    select: Literal["last", "best"] = knob(
        "best",
        doc="the stage's model: the validated one with the best validation accuracy (the first "
        "of equals), or the last step's; without validation (train.validate off, or no "
        "validation split) it is the last step's; onpolicy: of the rounds and the SFT start",
    )
    save_steps: int = runtime(50, doc="checkpoint every N steps", ge=1)
    keep_checkpoints: bool = runtime(
        False,
        doc="keep the last Trainer checkpoint (weights and optimizer state: ~12x the weights "
        "for a full fine-tune) after a successful train stage; false = delete checkpoints/",
    )
    logging_steps: int = runtime(5, doc="log the loss every N steps", ge=1)
    # Where the numbers go changes no weights: runtime, so no train key (nor on-policy's
    # chain of rounds) moves with it.
    report_to: Literal["none", "tensorboard", "trackio", "wandb", "mlflow"] = runtime(
        "none",
        doc="an experiment tracker that gets what training logs (loss, validation accuracy, "
        "on-policy rounds), its run named `<run>-train-<stage key>`: tensorboard writes into "
        "the stage dir's tracker/; trackio, wandb and mlflow go where their own environment "
        "variables say; each is an extra: pip install 'distill[NAME]'",
    )
    launcher: Literal["none", "accelerate"] = runtime(
        "none", doc="none: train in this process; accelerate: `accelerate launch`"
    )
    accelerate_config: str = runtime(
        "",
        doc="accelerate config file, or a shipped name (ddp_cpu, ddp_gpu, fsdp_gpu, "
        "deepspeed_zero3_gpu); '' = ddp_gpu with a GPU, else ddp_cpu",
    )
    num_processes: int = runtime(
        1, doc="processes for launcher: accelerate, on all machines together", ge=1
    )
    num_machines: int = runtime(
        1, doc="machines training together under accelerate (`distill slurm train`)", ge=1
    )
    machine_rank: int = runtime(
        0,
        doc="this machine's rank: 0 runs the stage and writes its dir, the others join it",
        ge=0,
    )
    main_process_ip: str = runtime("", doc="rank 0's address, when num_machines > 1")
    main_process_port: int = runtime(
        0,
        doc="rank 0's rendezvous port (0 = a free one; give one when num_machines > 1)",
        ge=0,
        le=65535,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.student.strip():
            raise ConfigError("must not be empty", "student")
        expand(self.student, "student")
        if self.max_steps == 0:
            raise ConfigError("0 steps; give a positive number, or -1 to use epochs", "max_steps")
        if self.epochs == "auto":
            self._check_auto()
        if self.objective == "kd" and self.answer_only:
            raise ConfigError(
                "kd learns the teacher's distributions along its own text; answer_only has "
                "none: use objective: sft for the answer-only ablation",
                "objective",
            )
        if self.objective == "onpolicy" and self.lora.enabled:
            raise ConfigError(
                "onpolicy trains the full student for now; set train.lora.enabled: false",
                "objective",
            )
        if self.objective == "features" and (self.lora.enabled or self.answer_only):
            raise ConfigError(
                "features trains the full student on the kept text; set train.lora.enabled "
                "and train.answer_only to false",
                "objective",
            )
        b = self.onpolicy.batch
        if b > self.batch_size and b % self.batch_size:
            raise ConfigError(
                f"{b} rollouts a step is not a multiple of train.batch_size "
                f"({self.batch_size}), the batches the update accumulates; give one, or at "
                "most train.batch_size",
                "onpolicy.batch",
            )
        if self.objective == "onpolicy" and self.answer_only:
            raise ConfigError(
                "onpolicy learns from the student's own text; use objective: sft for the "
                "answer-only ablation",
                "objective",
            )
        if self.chat_template:
            p = expand(self.chat_template, "chat_template")
            if not p.is_file():
                raise ConfigError(f"chat template file not found: {p}", "chat_template")
            try:
                p.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{p} is not UTF-8 text", "chat_template") from None
        self._check_machines()
        self._check_tracker()
        if self.accelerate_config:
            expand(self.accelerate_config, "accelerate_config")  # a bad ~user is its own error
            if accelerate_config_file(self.accelerate_config) is None:
                raise ConfigError(
                    f"{self.accelerate_config!r} is neither a file nor one of: "
                    f"{shipped_accelerate_names()}",
                    "accelerate_config",
                )

    def full_size(self) -> TrainConfig:
        """The full-size student of this config, which `trained` names: objective sft, no cut
        (the default run's train stage, where the rest is the default's)."""
        return replace(
            self,
            objective="sft",
            cut=CutConfig(),
            features=FeaturesConfig(),
            onpolicy=OnPolicyConfig(),
            kd=KDConfig(),
        )

    @property
    def needs_trained(self) -> bool:
        """The full-size student of this config (objective sft, no cut) comes first: it is cut,
        or it is a teacher in the loop."""
        feats = self.objective == "features" and TRAINED in self.features.teachers
        return feats or (self.cut.active and self.cut.source == TRAINED)

    def _check_auto(self) -> None:
        """epochs: auto stops by validation accuracy measured at each epoch's end."""
        why = ""
        if self.max_steps > 0:
            why = "train.max_steps fixes the length; set it to -1, or give a number of epochs"
        elif not self.validate:
            why = "it stops by validation accuracy: set train.validate: true, or give a number"
        elif self.validate_every:
            why = "it validates at each epoch's end: set train.validate_every: 0"
        elif self.select != "best":
            why = "it keeps the best measured epoch: set train.select: best"
        elif self.lr_scheduler != "cosine":
            why = "each epoch is its own cosine to zero: set train.lr_scheduler: cosine"
        if why:
            raise ConfigError(f"auto: {why}", "epochs")

    def _check_tracker(self) -> None:
        """A tracker is an optional extra: one line at load, not a traceback once the student
        is in memory. Each tracker's module and extra share its name; found, not imported
        (wandb and mlflow take seconds)."""
        name = self.report_to
        if name != "none" and find_spec(name) is None:
            raise ConfigError(
                f"{name} needs the Python package {name!r}, which is not installed: "
                f"pip install 'distill[{name}]'",
                "report_to",
            )

    def _check_machines(self) -> None:
        """Several machines: accelerate, a rendezvous, a rank among them, whole processes."""
        if self.machine_rank >= self.num_machines:
            raise ConfigError(
                f"{self.machine_rank} for {self.num_machines} machine(s); ranks count from 0",
                "machine_rank",
            )
        if self.num_machines == 1:
            return
        why = ""
        if self.launcher != "accelerate":
            why = "set train.launcher: accelerate"
        elif not self.main_process_ip:
            why = "set train.main_process_ip to rank 0's address"
        elif not self.main_process_port:
            why = "set train.main_process_port (the same on every machine)"
        elif self.num_processes % self.num_machines:
            why = f"num_processes ({self.num_processes}) must be a multiple of it"
        elif self.objective == "onpolicy":
            why = "onpolicy trains on one machine for now"
        if why:
            raise ConfigError(f"{self.num_machines} machines: {why}", "num_machines")
