#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (this is what CI runs, via .ci/run).
# 1. system programs the tests start for real (headless Chromium for the UI screenshot test,
#    PostgreSQL for the many-machine tests, which start a throw-away server as the postgres user);
# 2. a virtual environment with exptrack, its PostgreSQL driver and its dev tools; 3. lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "note: could not install ${missing[*]}; the tests that need them will be skipped"
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,postgres]'
.venv/bin/ruff check exptrack tests benchmarks
# Two pytest processes (pytest-xdist) on CI's 2 cores: most tests wait on the real processes they
# start, so a serial run kept about one core busy. EXPTRACK_TEST_WORKERS=0 runs them in this process.
.venv/bin/python -m pytest -q -n "${EXPTRACK_TEST_WORKERS:-2}" --dist loadgroup "$@"
