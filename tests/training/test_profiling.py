"""Profiling: cost figures on every trial, and what they are measured against."""

from __future__ import annotations

import csv
import gzip
import json
import platform
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from exptrack.config import TrialConfig
from exptrack.results import export
from exptrack.training import flops
from tests.fixtures_search import PROFILED, STUDY, TRIALS, Searched

TINY = TrialConfig(epochs=1, subset=96, image_size=16, weights="none", batch_size=32)


def test_the_bf16_peak_is_read_from_the_device_name_and_unknown_devices_have_none() -> None:
    assert flops.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert flops.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert flops.bf16_peak_tflops("NVIDIA L40S") == 362.0 and flops.bf16_peak_tflops("NVIDIA L4") == 121.0
    assert flops.bf16_peak_tflops("NVIDIA A10G") is None  # not in the table: no MFU, not a guess
    assert flops.bf16_peak_tflops("NVIDIA GeForce GTX 1080") is None


@pytest.mark.gpu
def test_on_cuda_a_trial_reports_gpu_phase_times_its_own_memory_peaks_and_mfu() -> None:
    import torch

    from exptrack.training import fit

    small = fit.fit(TINY.replace(device="cuda"), warn=lambda _: None).profile
    big = fit.fit(TINY.replace(device="cuda", batch_size=96, image_size=64), warn=lambda _: None).profile
    again = fit.fit(TINY.replace(device="cuda"), warn=lambda _: None).profile
    for figures in (small, big, again):
        assert figures["compute_seconds"] > 0 and figures["eval_seconds"] > 0
        assert 0 < figures["peak_cuda_allocated_mb"] <= figures["peak_cuda_reserved_mb"]
        assert figures["flops_per_sample"] > 0 and figures["achieved_tflops"] > 0
    # peaks are reset per trial: the small trial after the big one is back to its own level
    assert again["peak_cuda_allocated_mb"] < big["peak_cuda_allocated_mb"]
    if flops.bf16_peak_tflops(torch.cuda.get_device_name()) is not None:
        assert 0 < big["mfu"] < 1


def artifacts(client: MlflowClient, run_id: str, folder: str = "") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def trial_runs(searched: Searched) -> tuple[MlflowClient, dict[int, Any]]:
    client = MlflowClient(f"sqlite:///{searched.cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'trial'")
    return client, {int(r.data.tags["exptrack.trial"]): r for r in runs}


def assert_trace_and_ops(client: MlflowClient, run_id: str, tmp: Path) -> None:
    """The run's profile/ holds a Chrome trace with events and an operator table with rows."""
    assert artifacts(client, run_id, "profile") == {"profile/trace.json.gz", "profile/ops.csv"}
    folder = Path(client.download_artifacts(run_id, "profile", str(tmp)))
    with gzip.open(folder / "trace.json.gz", "rt") as file:
        events = json.load(file)["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") and e.get("ph") == "X" for e in events)
    with (folder / "ops.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert rows and all(float(r["self_cpu_ms"]) >= 0 for r in rows)
    assert any(r["operator"].startswith("aten::conv") for r in rows)  # a convnet spends its time there


@pytest.mark.slow
def test_the_first_profiled_trial_has_a_trace_and_ops_table_the_next_none_and_all_have_costs(
    searched: Searched, tmp_path: Path
) -> None:
    client, runs = trial_runs(searched)
    assert sorted(runs) == list(range(TRIALS))
    for number, run in runs.items():
        if number < PROFILED:
            assert_trace_and_ops(client, run.info.run_id, tmp_path / str(number))
        else:
            assert not artifacts(client, run.info.run_id, "profile")
        assert float(run.data.tags["profile/flops_per_sample"]) > 0  # every trial: the cost figures
        # and MLflow's own system metrics, filed under this host as the node id
        node = f"system/{platform.node()}/"
        for key in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "disk_usage_percentage"):
            assert node + key in run.data.metrics, sorted(run.data.metrics)


@pytest.mark.slow
def test_exp_train_profile_traces_a_reproduction_onto_its_run(searched: Searched, tmp_path: Path) -> None:
    (config,) = export.write(export.export_trials(searched.study(), top=1), tmp_path)  # as `exp export`
    trained = searched.exp("train", str(config), "--profile")
    assert trained.returncode == 0, trained.stderr
    run_id = re.search(r"MLflow run (\w+)", trained.stdout).group(1)  # type: ignore[union-attr]
    client, _ = trial_runs(searched)
    assert_trace_and_ops(client, run_id, tmp_path / "train")
    assert float(client.get_run(run_id).data.tags["profile/flops_per_sample"]) > 0
    assert_no_profiler_noise(trained.stdout + trained.stderr)


def assert_no_profiler_noise(printed: str) -> None:
    """torch's C++ profiler logs (libkineto, c10) are not the user's concern (issue 19, item 14)."""
    for line in ("gpuGetDeviceCount", "USDT:", "STAGE:", "CPUAllocator"):
        assert line not in printed, printed[-2000:]


@pytest.mark.slow
def test_a_profiled_search_on_cpu_prints_none_of_torchs_profiler_logs(searched: Searched) -> None:
    assert_no_profiler_noise(searched.stdout + searched.stderr)  # its first trial was traced


def test_profile_trials_are_shared_out_among_workers_not_repeated_by_each() -> None:
    from exptrack.search.workers import profile_shares

    assert profile_shares(5, 2) == [3, 2] and profile_shares(1, 4) == [1, 0, 0, 0]
    assert profile_shares(0, 3) == [0, 0, 0]
