"""Which engine serves a local model, and which cores a CPU engine gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ask import resolve_engine, spec_from
from pipeline.config import load_config, shipped_config
from pipeline.offline import child_env
from pipeline.servers import cpu_slices, physical_cores


@pytest.mark.parametrize(
    ("engine", "urls", "replicas", "gpu_ids", "server_args", "want"),
    [
        ("auto", False, 1, (), (), "offline"),  # the bundled default: quickest to start
        ("auto", True, 1, (), (), "server"),  # endpoints are always asked over HTTP
        ("auto", False, 2, (), (), "server"),  # replicas are servers
        ("auto", False, 1, ("0",), (), "server"),
        ("auto", False, 1, (), ("--seed", "1"), "server"),  # server flags need a server
        ("server", False, 1, (), (), "server"),
        ("offline", False, 1, (), (), "offline"),
    ],
)
def test_auto_picks_offline_unless_a_server_is_needed(
    engine: str, urls: bool, replicas: int, gpu_ids: tuple, server_args: tuple, want: str
) -> None:
    assert resolve_engine(engine, urls, replicas, gpu_ids, server_args) == want


def test_default_config_serves_teacher_and_students_offline() -> None:
    cfg = load_config(shipped_config("default"))
    assert cfg.teacher.serve.engine == cfg.eval.serve.engine == "auto"
    teacher = spec_from(cfg.teacher.serve, "teacher", Path("/m"))
    assert teacher.engine == "offline"
    servers = load_config(shipped_config("servers"))
    assert spec_from(servers.eval.serve, "student", Path("/m")).engine == "server"
    ext = load_config(shipped_config("default"), ["teacher.endpoint=http://h:1/v1"])
    urls = tuple(ext.teacher.urls())
    assert spec_from(ext.teacher.serve, "teacher", None, urls=urls).engine == "server"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_one_cpu_engine_gets_every_physical_core() -> None:
    """vLLM's own `auto` binding keeps a core back; one engine alone gets them all."""
    cores = physical_cores()
    assert cores and set(cores) <= os.sched_getaffinity(0)
    assert cpu_slices(1) == [",".join(map(str, cores))]
    if len(cores) >= 2:
        halves = cpu_slices(2)
        assert len(halves) == 2 and not set(halves[0].split(",")) & set(halves[1].split(","))


def test_offline_child_runs_the_engine_in_itself_on_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    env = child_env(kv_cache_gib=3.0)
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # no engine-core or worker processes
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    if hasattr(os, "sched_getaffinity"):
        assert env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_slices(1)[0]
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    assert child_env(1.0)["VLLM_CPU_OMP_THREADS_BIND"] == "0"  # the user's binding wins


def test_trace_budget_sets_up_the_servers_we_start():
    """A model with a trace budget gets vLLM's --reasoning-config (its think tags), unless the
    server args already name a reasoning parser, which then says where traces end."""
    import json

    from pipeline.ask import ModelSpec, _reasoning_args

    tags = ("<think>", "</think>")
    assert _reasoning_args(ModelSpec("s")) == []
    flag, value = _reasoning_args(ModelSpec("s", think_tags=tags))
    assert flag == "--reasoning-config" and json.loads(value) == {
        "reasoning_start_str": "<think>",
        "reasoning_end_str": "</think>",
    }
    parser = ("--reasoning-parser", "deepseek_r1")
    assert _reasoning_args(ModelSpec("s", think_tags=tags, server_args=parser)) == []
