"""What this machine runs natively, and the dtype an engine or a trainer takes on it.

One rule for every vLLM engine distill starts (offline, managed servers, Ray actors; for the
teacher, eval, validation, on-policy rollouts and scoring, draft scoring) and for training:
bf16 where the hardware has it natively (a CUDA device of compute capability 8.0 or more; a
CPU with `avx512_bf16` or `amx_bf16`), fp16 on a GPU without bf16, float32 on any other CPU.
Elsewhere bf16 is emulated, and emulation is slow: on a 2-core AVX2 EPYC (Zen 3), bare
`vllm.LLM` on SmolLM2-135M ran 58 tokens/s in bf16 against 351 in float32, and the pipeline's
offline engine about 7 against 200 (shared/stack-notes.md, measured 2026-12). An explicit
dtype still wins; bf16 asked for where it is emulated gets one warning line with that cost.

No ML library is imported (the framework imports none): the CPU's flags come from /proc/cpuinfo,
and a GPU's name and compute capability from `nvidia-smi`, asked only where an NVIDIA driver is
loaded.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags of native bf16 arithmetic
EMULATED_COST = (
    "vLLM emulates it, about 6x slower than float32 (58 against 351 tokens/s measured on a "
    "2-core AVX2 CPU)"
)


@dataclass(frozen=True)
class Hardware:
    """The device an engine or trainer runs on, as far as the dtype is concerned."""

    device: Literal["cuda", "cpu"]
    name: str  # the CPU's model name, or the GPU's
    native_bf16: bool
    cores: int  # CPU cores this process may use (GPUs: the devices visible)
    why: str  # what decided native_bf16: the flag found, or the compute capability

    def describe(self) -> str:
        """One line: `CPU Intel(R) Xeon(R), 2 cores, native bf16 (avx512_bf16)`."""
        what = "GPU" if self.device == "cuda" else "CPU"
        count = f"{self.cores} {'device' if self.device == 'cuda' else 'core'}"
        bf16 = f"native bf16 ({self.why})" if self.native_bf16 else f"no native bf16 ({self.why})"
        return f"{what} {self.name}, {count}{'s' if self.cores != 1 else ''}, {bf16}"


def cpu_hardware(cpuinfo: str, cores: int) -> Hardware:
    """The CPU described by the text of /proc/cpuinfo (injectable, so tests need no such CPU)."""
    flags: set[str] = set()
    name = "unknown"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:  # Features: aarch64's name for them
            flags = set(value.split())
        elif key == "model name" and name == "unknown":
            name = value.strip()
    found = [f for f in BF16_FLAGS if f in flags]
    why = found[0] if found else f"neither {' nor '.join(BF16_FLAGS)}"
    return Hardware("cpu", name, bool(found), cores, why)


def cuda_hardware(name: str, capability: tuple[int, int], count: int) -> Hardware:
    """A CUDA device: bf16 is native from compute capability 8.0 (Ampere) on."""
    native = tuple(capability) >= (8, 0)
    return Hardware(
        "cuda", name, native, count, f"compute capability {capability[0]}.{capability[1]}"
    )


def cpu_cores() -> int:
    """The cores this process may run on (a Slurm or taskset limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cuda_from_smi(text: str, visible: str | None) -> Hardware | None:
    """The first visible GPU of `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`
    output; `visible` is CUDA_VISIBLE_DEVICES (None: unset, every GPU)."""
    rows = []
    for line in text.splitlines():
        name, _, cap = line.rpartition(",")
        major, _, minor = cap.strip().partition(".")
        if name.strip() and major.isdigit() and minor.isdigit():
            rows.append((name.strip(), (int(major), int(minor))))
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in wanted):  # indices; a list of UUIDs keeps the order given
            rows = [rows[int(v)] for v in wanted if int(v) < len(rows)]
        else:
            rows = rows[: len(wanted)]
    if not rows:
        return None
    name, capability = rows[0]
    return cuda_hardware(name, capability, len(rows))


def _cuda() -> Hardware | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    if not Path("/proc/driver/nvidia/version").exists():
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return cuda_from_smi(out, visible)


@cache
def detect(gpu: bool = True) -> Hardware:
    """This machine: its first visible CUDA device when `gpu` and there is one, else its CPU."""
    found = _cuda() if gpu else None
    if found is not None:
        return found
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return cpu_hardware(text, cpu_cores())


def native_bf16(gpu: bool = True) -> bool:
    """Whether bf16 runs natively where this process trains or serves (`gpu`: a CUDA device is
    used when there is one). The one answer for serving and training."""
    return detect(gpu).native_bf16


@dataclass(frozen=True)
class DtypeChoice:
    dtype: Literal["bfloat16", "float16", "float32"]
    why: str  # for the line printed when an engine starts, and the manifest
    warning: str = ""  # an explicit bf16 that will be emulated

    def as_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype, "dtype_why": self.why}


def choose_dtype(requested: str, hw: Hardware) -> DtypeChoice:
    """The dtype for `requested` (auto, bfloat16, float16, float32) on `hw` (module doc)."""
    what = "this GPU" if hw.device == "cuda" else "this CPU"
    if requested != "auto":
        warning = ""
        if requested == "bfloat16" and not hw.native_bf16 and hw.device == "cpu":
            warning = f"bfloat16 was asked for, but {what} has no native bf16: {EMULATED_COST}"
        return DtypeChoice(requested, "as configured", warning)  # type: ignore[arg-type]
    if hw.native_bf16:
        return DtypeChoice("bfloat16", f"{what} has native bf16: {hw.why}")
    if hw.device == "cuda":
        return DtypeChoice("float16", f"{what} has no native bf16: {hw.why}")
    return DtypeChoice("float32", f"{what} has no native bf16")


def concrete(dtype: str, gpu: bool = True) -> str:
    """`dtype` as an engine takes it: auto becomes this machine's choice, silently (an engine
    started outside `ask`, which says its choice: a test's server, a Ray node's engine)."""
    return choose_dtype(dtype, detect(gpu)).dtype if dtype == "auto" else dtype
