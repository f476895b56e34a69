#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (this is what CI runs, via .ci/run).
# 1. system programs the tests start for real (headless Chromium for the UI screenshot test);
# 2. a virtual environment with exptrack and its dev tools; 3. lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check exptrack tests benchmarks
.venv/bin/python -m pytest -q "$@"
