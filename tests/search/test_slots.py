"""Where `--workers` and `--gpus` workers run, as plain arithmetic (no GPU needed): each worker's
share of the cores, one GPU each with its share of the free memory, refusals in one line, the
order each worker is handed, and each worker's seed stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from exptrack.errors import UserError
from exptrack.search.options import Order, SearchOptions, factory_name, study_source
from exptrack.search.slots import MIN_SLOT_BYTES, Slot, cpu_slots, gpu_slots, parse_gpus, thread_share
from exptrack.search.study_setup import worker_seed
from exptrack.search.workers import worker_options
from exptrack.study import Study
from tests.faultkit import FAULTY, SMALL, run_cli_batch

GiB = 2**30


def test_workers_split_the_cores_unless_the_user_set_a_thread_count() -> None:
    assert thread_share(2, 2) == 1 and thread_share(3, 16) == 5 and thread_share(4, 2) == 1
    assert thread_share(2, 16, "3") == 3  # OMP_NUM_THREADS=3 is the user's call
    assert thread_share(2, 16, "") == 8
    (slot, _) = cpu_slots(2, 8)
    assert slot.env() == {"EXPTRACK_THREADS": "4", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}


def test_gpus_all_or_a_list_each_checked_against_the_devices_present() -> None:
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("0,2", 4) == [0, 2]
    for text, fix in (("4", "GPUs 0-3"), ("1,1", "list each once"), ("x", "--gpus 0,1")):
        with pytest.raises(UserError, match=fix):
            parse_gpus(text, 4)
    with pytest.raises(UserError, match="--gpus needs CUDA"):
        parse_gpus("all", 0)


def test_per_gpu_packs_workers_each_limited_to_its_share_of_the_free_memory() -> None:
    free, total = {0: 80 * GiB, 1: 40 * GiB}, {0: 80 * GiB, 1: 80 * GiB}
    slots = gpu_slots([0, 1], 2, free, total, cores=16)
    assert [s.device for s in slots] == [0, 0, 1, 1]
    assert [s.threads for s in slots] == [4] * 4
    fractions = [s.memory_fraction for s in slots]
    assert fractions[0] == pytest.approx(0.95 / 2) and fractions[2] == pytest.approx(0.95 / 4)
    env = Slot(4, 1, 0.25).env()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["EXPTRACK_GPU_MEMORY_FRACTION"] == "0.2500"
    with pytest.raises(UserError, match=r"GPU 1 has 1\.0 GiB free: too little for 4 workers"):
        gpu_slots([0, 1], 4, {0: 80 * GiB, 1: GiB}, total, cores=16)
    assert gpu_slots([0], 1, {0: MIN_SLOT_BYTES * 2}, {0: 80 * GiB}, cores=1)[0].threads == 1


def test_a_worker_is_ordered_the_same_search_for_one_process_on_the_resolved_study(tmp_path: Path) -> None:
    asked = SearchOptions(
        trials=9, storage="sqlite:///o.db", gpus="all", per_gpu=2, workers=3, new_study=True,
        profile_trials=5, enqueue=(Path("best"),), seed=7,
    ).resolved()  # fmt: skip
    one = worker_options(asked, "s-2", 3)
    assert (one.workers, one.gpus, one.per_gpu, one.worker) == (1, None, 1, True)
    assert (one.study_name, one.new_study, one.profile_trials) == ("s-2", False, 3)  # NAME-2 joined, not made
    assert (one.trials, one.seed, one.storage, one.enqueue) == (9, 7, "sqlite:///o.db", (Path("best"),))
    # what the worker reads back from its file is what the coordinator meant, a Python Study included
    study = Study(name="s", search_space="space.yaml", fixed={"epochs": 1}, constraints=["trainable_params <= 5"],
                  starting_points=[{"lr": 0.01}])
    order = Order(study_source(study), {"lr": 0.1}, one, factory_name(study_source))
    back = Order.from_json(order.to_json())
    assert (back.options, back.overrides, back.dashboard) == (one, {"lr": 0.1}, order.dashboard)
    assert back.load_study() == study and back.dashboard_factory() is study_source
    file_study = Study(name="f", search_space="space.yaml", source_path=tmp_path / "f.py")
    assert study_source(file_study) == str(tmp_path / "f.py")  # imported again: its registrations too


def test_each_worker_samples_from_its_own_stream_of_the_study_seed() -> None:
    assert worker_seed(7, 0) == 7  # one process: the seed itself, as before
    streams = [worker_seed(7, k) for k in range(1, 6)]
    assert len(set(streams)) == 5 and streams == [worker_seed(7, k) for k in range(1, 6)]


@pytest.mark.slow
def test_gpus_without_cuda_and_per_gpu_without_gpus_are_one_line_errors_before_any_store(
    project: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    search = ["search", FAULTY, *SMALL]
    results = run_cli_batch([(project, [*search, "--gpus", "0"]), (project, [*search, "--per-gpu", "2"])])
    assert [r.returncode for r in results] == [2, 2]
    assert results[0].stderr.strip().startswith("error: --gpus needs CUDA")
    assert results[1].stderr.strip() == "error: --per-gpu needs --gpus (e.g. --gpus all --per-gpu 2)"
    assert all(len(r.stderr.strip().splitlines()) == 1 for r in results)
    assert not (project / "optuna.db").exists() and not (project / "mlflow.db").exists()
