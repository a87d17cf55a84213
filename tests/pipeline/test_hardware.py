"""The dtype every engine and trainer takes (pipeline/hardware.py), decided from injected
hardware: no test depends on this machine having native bf16 or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.ask import AskSettings, ModelSpec, ask, served_dtype
from pipeline.calls import Request
from pipeline.config import load_config, shipped_config
from pipeline.hardware import Hardware, choose_dtype, cpu_hardware, cuda_hardware, detect

ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R)\nflags\t: avx2 avx512f avx512_bf16 amx_tile\n"
AMX_ONLY = "model name\t: Some CPU\nflags\t: avx2 amx_bf16 amx_tile\n"


@pytest.mark.parametrize(
    ("hw", "want"),
    [
        (cuda_hardware("NVIDIA H100", (9, 0), 1), "bfloat16"),
        (cuda_hardware("NVIDIA A100", (8, 0), 8), "bfloat16"),
        (cuda_hardware("Tesla V100", (7, 0), 1), "float16"),  # a GPU without bf16: fp16
        (cuda_hardware("Tesla T4", (7, 5), 1), "float16"),
        (cpu_hardware(SAPPHIRE, 2), "bfloat16"),  # avx512_bf16
        (cpu_hardware(AMX_ONLY, 2), "bfloat16"),  # amx_bf16
        (cpu_hardware(ZEN3, 2), "float32"),  # neither: bf16 would be emulated
        (cpu_hardware("", 1), "float32"),  # nothing readable: never assume bf16
    ],
)
def test_auto_takes_the_dtype_the_hardware_runs_natively(hw: Hardware, want: str) -> None:
    got = choose_dtype("auto", hw)
    assert got.dtype == want and not got.warning


def test_the_reason_names_what_decided_it() -> None:
    assert cpu_hardware(SAPPHIRE, 2).why == "avx512_bf16"
    assert cpu_hardware(AMX_ONLY, 2).why == "amx_bf16"
    zen = cpu_hardware(ZEN3, 2)
    assert zen.name == "AMD EPYC 7B13" and zen.cores == 2 and not zen.native_bf16
    assert choose_dtype("auto", zen).why == "this CPU has no native bf16"
    assert zen.describe() == (
        "CPU AMD EPYC 7B13, 2 cores, no native bf16 (neither avx512_bf16 nor amx_bf16)"
    )
    assert "compute capability 7.0" in choose_dtype("auto", cuda_hardware("V100", (7, 0), 1)).why


@pytest.mark.parametrize("asked", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_wins(asked: str) -> None:
    for hw in (cpu_hardware(ZEN3, 2), cpu_hardware(SAPPHIRE, 2), cuda_hardware("T4", (7, 5), 1)):
        assert choose_dtype(asked, hw).dtype == asked


def test_bf16_asked_for_where_it_is_emulated_warns_with_the_cost() -> None:
    warned = choose_dtype("bfloat16", cpu_hardware(ZEN3, 2)).warning
    assert "no native bf16" in warned and "58 against 351 tokens/s" in warned
    assert not choose_dtype("bfloat16", cpu_hardware(SAPPHIRE, 2)).warning
    assert not choose_dtype("float32", cpu_hardware(ZEN3, 2)).warning


def test_the_default_config_serves_and_trains_by_the_rule() -> None:
    cfg = load_config(shipped_config("default"))
    assert cfg.teacher.serve.dtype == cfg.eval.serve.dtype == "auto"
    assert cfg.train.bf16  # autocast where native_bf16 says so; float32 elsewhere
    assert ModelSpec("x").dtype == "auto"


def test_an_engine_start_says_its_choice_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.ask.detect", lambda gpu=True: cpu_hardware(ZEN3, 2))
    got = served_dtype(ModelSpec("teacher", Path("/m"), engine="offline"))
    assert got is not None and got.dtype == "float32"
    assert capsys.readouterr().out == "teacher: float32 (this CPU has no native bf16)\n"
    served_dtype(ModelSpec("teacher", Path("/m"), engine="offline", dtype="bfloat16"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "teacher: bfloat16 (as configured)"
    assert lines[1].startswith("teacher: warning: bfloat16 was asked for, but this CPU")
    # an endpoint someone else runs: its dtype is not ours to choose or to claim
    assert served_dtype(ModelSpec("teacher", urls=("http://h:1/v1",))) is None
    assert capsys.readouterr().out == ""


def test_this_machine_is_read_without_torch_on_a_cpu() -> None:
    hw = detect(gpu=False)
    assert hw.device == "cpu" and hw.cores >= 1
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert hw.native_bf16 == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.slow
def test_the_engine_runs_in_the_chosen_dtype_and_the_manifest_says_it(
    tiny_generated: dict,
) -> None:
    """generate's real offline engine: vLLM loaded the weights in the rule's dtype for this
    machine, and the manifest records it."""
    want = choose_dtype("auto", detect()).dtype
    stats = tiny_generated["manifest"]["stats"]
    assert stats["dtype"] == want and stats["dtype_why"]
    log = (tiny_generated["dir"] / "logs" / "engine.log").read_text()
    assert f"dtype=torch.{want}" in log
    assert json.dumps(want) in (tiny_generated["dir"] / "manifest.json").read_text()


@pytest.mark.slow
def test_a_cpu_without_bf16_gets_a_float32_engine(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule's other answer on this machine, whatever its CPU: the real offline engine, told
    it runs on an AVX2-only CPU, loads float32 weights."""
    monkeypatch.setattr("pipeline.ask.detect", lambda gpu=True: cpu_hardware(ZEN3, 2))
    spec = ModelSpec("teacher", tiny_model, engine="offline")
    req = Request(
        ["q0"],
        [{"role": "user", "content": "2+2?"}],
        {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4},
    )
    done: list = []
    stats = ask(spec, [req], done.append, done.append, AskSettings(), tmp_path)
    assert [c.id for c in done] == ["q0"]
    assert stats.dtype is not None and stats.dtype.dtype == "float32"
    assert stats.as_dict()["dtype"] == "float32"
    assert "dtype=torch.float32" in (tmp_path / "engine.log").read_text()


def test_the_startup_check_says_the_machine_and_every_dtype(monkeypatch: pytest.MonkeyPatch):
    from pipeline.report import machine_lines

    monkeypatch.setattr("pipeline.hardware.detect", lambda gpu=True: cpu_hardware(ZEN3, 2))
    cfg = load_config(shipped_config("default"))
    assert machine_lines(cfg) == [
        "machine: CPU AMD EPYC 7B13, 2 cores, no native bf16 (neither avx512_bf16 nor amx_bf16)",
        "  teacher in float32, students in float32, training in float32",
    ]
    forced = load_config(
        shipped_config("default"), ["teacher.serve.dtype=bfloat16", "teacher.endpoint=auto"]
    )
    assert "teacher in bfloat16 (emulated here: slow)" in machine_lines(forced)[1]
    monkeypatch.setattr("pipeline.hardware.detect", lambda gpu=True: cpu_hardware(SAPPHIRE, 2))
    ext = load_config(shipped_config("default"), ["teacher.endpoint=http://h:1/v1"])
    assert machine_lines(ext)[1] == (
        "  teacher at its endpoint, students in bfloat16, training in bf16 autocast"
    )


def test_progress_says_the_measured_rate_and_the_time_left_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import progress

    clock = iter(float(t) for t in range(0, 1000, 10))  # each reading 10 s after the last
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.Progress(100, "sample", "teacher") as bar:
        bar.start()
        for _ in range(5):
            bar.done(tokens=50)
    said = [line for line in capsys.readouterr().out.splitlines() if line]
    # counted from the first answer (a batch engine fills its batch first): two more answers,
    # 100 tokens, in the 20 s after it
    assert said == ["teacher: 5 tok/s here; the other 97 samples take about 16.2 min at that rate"]
    assert progress.estimate_line("base", "q", 10, 5, 0, 4.0) == (
        "base: 2.5 q/s here; the other 5 q take about 2 s at that rate"
    )
    assert progress.duration(30) == "30 s" and progress.duration(4 * 3600) == "4.0 h"


def test_a_gpu_is_read_from_nvidia_smi_as_cuda_visible_devices_says() -> None:
    from pipeline.hardware import cuda_from_smi

    smi = "Tesla V100-SXM2-16GB, 7.0\nNVIDIA A100-SXM4-80GB, 8.0\nNVIDIA A100-SXM4-80GB, 8.0\n"
    first = cuda_from_smi(smi, None)
    assert first is not None and first.name.startswith("Tesla V100") and first.cores == 3
    assert choose_dtype("auto", first).dtype == "float16"
    later = cuda_from_smi(smi, "1,2")  # the devices this process is given, in that order
    assert later is not None and later.native_bf16 and later.cores == 2
    assert choose_dtype("auto", later).dtype == "bfloat16"
    assert cuda_from_smi(smi, "7") is None  # a device that is not there
    assert cuda_from_smi("", None) is None  # nvidia-smi said nothing usable: the CPU decides
    assert cuda_from_smi("No devices were found\n", None) is None


def test_engines_started_after_training_still_log_what_they_loaded() -> None:
    """TRL, once imported, sets VLLM_LOGGING_LEVEL=ERROR where it is unset: the engines that
    eval and validation start after the train stage would log nothing, not even their dtype.
    The CLI sets INFO first; a level the user gives stays."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "import os; from pipeline import cli; cli.main(['config']); import trl; "
        "print('LEVEL', os.environ['VLLM_LOGGING_LEVEL'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    for given, want in ((None, "INFO"), ("DEBUG", "DEBUG")):
        run_env = env if given is None else {**env, "VLLM_LOGGING_LEVEL": given}
        p = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert f"LEVEL {want}" in p.stdout, p.stderr[-2000:]
