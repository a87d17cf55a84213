"""Where distill's shipped files lie in the checkout: one place for every module that needs one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # this file is pipeline/paths.py
PROMPTS_DIR = ROOT / "prompts"  # the shipped Jinja prompt templates
DATA_DIR = ROOT / "data"  # bundled tasks: data/NAME.jsonl
CONFIGS_DIR = ROOT / "pipeline" / "configs"  # the shipped YAML configs
ACCELERATE_DIR = CONFIGS_DIR / "accelerate"  # the shipped accelerate configs


def accelerate_config_file(name: str) -> Path | None:
    """train.accelerate_config as a file: a path to one, or the name of a shipped one (ddp_cpu,
    ddp_gpu, fsdp_gpu, deepspeed_zero3_gpu, with or without .yaml); None when it is neither."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    shipped = ACCELERATE_DIR / f"{name.removesuffix('.yaml')}.yaml"
    return shipped if shipped.is_file() else None


def shipped_accelerate_names() -> str:
    return ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
