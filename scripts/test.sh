#!/usr/bin/env bash
# The test suite, real vLLM and real TRL over tiny models built on the fly. Sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report's browser tests drive Debian's chromium (tests/browser.py); Playwright never downloads
# a browser of its own. Installed here where apt can; elsewhere those tests say what is missing.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the report's browser tests ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null || echo "chromium could not be installed: the browser tests will say so" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
