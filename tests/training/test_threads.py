"""OpenMP's wait policy: exptrack's entry points make torch's idle threads sleep (PASSIVE) unless the
user chose a wait behaviour, and that changes how fast a trial runs on a shared machine, never
what it computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from exptrack import processes
from tests.conftest import REPO

# One trial at the tests' size, trained at 2 threads, its per-epoch metrics printed as JSON.
FIT = """
import json, torch
torch.set_num_threads(2)
from exptrack.config import TrialConfig
from exptrack.training import fit
config = TrialConfig(epochs=2, subset=96, image_size=16, weights="none", batch_size=32, device="cpu")
print(json.dumps(fit.fit(config, warn=lambda line: None).history))
"""


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ({}, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
        ({"GOMP_SPINCOUNT": "1000"}, None),  # a spin count is a wait behaviour too: left alone
    ],
)
def test_entry_points_make_idle_threads_sleep_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch, users: dict[str, str], expected: str | None
) -> None:
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(key, raising=False)  # restored after the test, whatever the call sets
    for key, value in users.items():
        monkeypatch.setenv(key, value)
    processes.quiet_libraries()  # what `exp`, a worker and the Python API run before torch loads
    assert os.environ.get("OMP_WAIT_POLICY") == expected


def _history(env: dict[str, str]) -> list[dict[str, float]]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", FIT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sleeping_threads_train_to_bit_identical_metrics() -> None:
    passive = _history({"OMP_WAIT_POLICY": "PASSIVE"})
    spinning = _history({"GOMP_SPINCOUNT": "300000"})  # libgomp's default when no policy is set
    assert len(passive) == 2
    assert passive == spinning  # exact: the same threads split the same work; only waiting differs
