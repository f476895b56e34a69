#!/usr/bin/env bash
# Issue 12's GPU check in one command, for a bare GPU machine: python3 with torch, numpy, pandas,
# scikit-learn, typer, rich, pytest... but no optuna, mlflow or plotly, and no network: those come
# as wheels carried in .whl/ (list: benchmarks/gpu_wheels.txt). Each step has its own time limit
# and writes into OUTDIR (7 files, under the device tool's 8):
#   1. install the wheels into /tmp/exptrack-site, print versions and nvidia-smi -> environment.txt
#   2. the gpu-marked tests, pytest -m gpu                                     -> pytest.log, pytest.xml
#   3. the side-by-side study and the compute-bound arm, benchmarks/gpu_study.py
#                                                   -> gpu_study.json, exptrack.log, baseline.log
#   4. the CPU study's driver on the GPU, benchmarks/study_vs_baseline.py --device cuda --arms exptrack baseline
#      (exptrack against the plain script, A-B-B-A; its run logs stay in WORK) -> study_vs_baseline.json
# The whole run stays under GPU_CHECK_SECONDS (480 s: 330 for steps 1-3, SVB_S=150 for step 4), so
# the 15-minute device budget holds one try with the machine's start; step 3 gets what the steps
# before it left, less step 4's share.
#
# Once, here (pip with network), fetch the wheels for the machine's python 3.12 into .whl/ (git-ignored):
#   bash benchmarks/gpu_check.sh --fetch-wheels
# which runs the device README's command with the list:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
# Then on the device: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=510).
#
# Rehearsal on CPU (every step, tiny sizes, generous limits; the GPU-only figures come out null):
#   WHEEL_PYTHON=3.11 WHEELS=/tmp/whl311 bash benchmarks/gpu_check.sh --fetch-wheels
#   GPU_CHECK_TINY=1 PYTHON=.venv/bin/python WHEELS=/tmp/whl311 bash benchmarks/gpu_check.sh /tmp/gpu-out
# Extra `exp search` arguments for the exptrack arm: EXPTRACK_ARGS="--per-gpu 4".
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p "$WHEELS" && rm -f "$WHEELS"/*.whl  # one version of each: two stop the whole install
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WHEELS" -r benchmarks/gpu_wheels.txt
fi

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR | --fetch-wheels}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SITE=${GPU_CHECK_SITE:-/tmp/exptrack-site}
WORK=${GPU_CHECK_WORK:-/tmp/exptrack-gpu-check}
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then  # CPU rehearsal: 2 shared cores, so limits are generous
  BUDGET=${GPU_CHECK_SECONDS:-3600} INSTALL_S=300 TESTS_S=900 STUDY_FLAGS=(--tiny) SVB_S=${SVB_S:-900}
  SVB_FLAGS=(--device cpu --arms exptrack baseline --trials 2 --subset 64 --epochs 1)
else
  BUDGET=${GPU_CHECK_SECONDS:-480} INSTALL_S=60 TESTS_S=75 STUDY_FLAGS=() SVB_S=${SVB_S:-150}
  SVB_FLAGS=(--device cuda --arms exptrack baseline)
fi
export PYTHONUNBUFFERED=1
failed=()
step() { echo "== $(date +%T) +${SECONDS}s: $*"; }

{
  step "install $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) wheels from $WHEELS into $SITE"
  rm -rf "$SITE" "$WORK"
  timeout "$INSTALL_S" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHEELS"/*.whl || failed+=(install)
  export PYTHONPATH="$REPO:$SITE"
  step "versions"
  "$PY" - <<'EOF' || failed+=(imports)
import platform, torch, optuna, mlflow, plotly, sqlalchemy, exptrack.cli
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("optuna", optuna.__version__, "| mlflow", mlflow.__version__, "| plotly", plotly.__version__,
      "| sqlalchemy", sqlalchemy.__version__)
EOF
  step "nvidia-smi"
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
} >"$OUT/environment.txt" 2>&1

step "pytest -m gpu" >"$OUT/pytest.log"
timeout "$TESTS_S" "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/pytest.xml" tests/ \
  >>"$OUT/pytest.log" 2>&1 || failed+=(gpu-tests)
tail -n 15 "$OUT/pytest.log"

LEFT=$((BUDGET - SECONDS - 10 - SVB_S))
ARM_S=$(((LEFT - 40) / 2))  # two arms; ~40 s left for the compute-bound arm
step "gpu_study.py: ${LEFT}s left, ${ARM_S}s per arm"
# shellcheck disable=SC2086  # EXPTRACK_ARGS splits into words on purpose
timeout "$LEFT" "$PY" benchmarks/gpu_study.py --out "$OUT" --work "$WORK" --arm-timeout "$ARM_S" \
  "${STUDY_FLAGS[@]}" $(for a in ${EXPTRACK_ARGS:-}; do echo "--exptrack-arg=$a"; done) \
  || failed+=(gpu-study)

step "study_vs_baseline.py ${SVB_FLAGS[*]}: ${SVB_S}s"
timeout "$SVB_S" "$PY" benchmarks/study_vs_baseline.py --out "$WORK/svb" "${SVB_FLAGS[@]}" \
  >"$WORK/svb.log" 2>&1 || failed+=(study-vs-baseline)
tail -n 30 "$WORK/svb.log"
cp "$WORK/svb/study_vs_baseline.json" "$OUT/" 2>/dev/null || echo "(no study_vs_baseline.json)"

step "done; failed steps: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
