"""Where and when a trial's checkpoint is kept, on a real sqlite Optuna store and real files: the
--checkpoint-mb cap, a retry taking over its predecessor's file, the one retry a SIGTERMed trial
gets, and the sweep that leaves only what a trial may still resume from."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from exptrack import records
from exptrack.search import checkpoints, ownership
from exptrack.stores import backends
from exptrack.training.checkpoints import Checkpoint, write

CONFIG = {"lr": 0.01, "epochs": 3, "loss_params": {}}


def _saver(
    folder: Path, number: int, retry_of: int | None = None, cap_mb: int = 1, said: list[str] | None = None
):  # type: ignore[no-untyped-def]
    return checkpoints.TrialCheckpoints(
        folder, number, retry_of, CONFIG, cap_mb, (said if said is not None else []).append
    )


def test_a_checkpoint_over_the_cap_is_not_kept_and_said_once(tmp_path: Path) -> None:
    said: list[str] = []
    saver = _saver(tmp_path, 4, cap_mb=1, said=said)
    big = {"model": torch.zeros(2**19)}  # 2 MiB of float32 against a 1 MB cap
    saver.save(1, [{"epoch": 1, "val_loss": 0.5}], big)
    saver.save(2, [{"epoch": 2, "val_loss": 0.4}], big)
    assert not saver.path.exists() and saver.saved_epoch is None
    assert said == [
        "trial 4: its checkpoint (2 MB) is over --checkpoint-mb 1: none is kept, so a killed trial "
        "restarts from epoch 1"
    ]
    saver.save(2, [{"epoch": 2, "val_loss": 0.4}], {"model": torch.zeros(16)})  # under the cap
    assert saver.saved_epoch == 2 and [p.name for p in tmp_path.iterdir()] == ["4.pt"]
    off = _saver(tmp_path, 5, cap_mb=0, said=said)  # --checkpoint-mb 0: none, and nothing said
    off.save(1, [], {"model": torch.zeros(16)})
    assert not off.path.exists() and len(said) == 1 and not off.due()


def test_checkpoints_are_spaced_by_checkpoint_every_seconds_of_training(tmp_path: Path) -> None:
    spaced = checkpoints.TrialCheckpoints(tmp_path, 0, None, CONFIG, every_s=3600)
    assert not spaced.due()  # an hour has not passed since the trial began
    spaced.save(1, [], {"model": torch.zeros(16)})
    assert not spaced.path.exists()
    every = checkpoints.TrialCheckpoints(tmp_path, 1, None, CONFIG, every_s=0)
    every.save(1, [], {"model": torch.zeros(16)})
    assert every.due() and every.saved_epoch == 1


def test_a_retry_takes_over_its_predecessors_checkpoint_of_the_same_config_only(tmp_path: Path) -> None:
    write(checkpoints.path_of(tmp_path, 0), Checkpoint(2, CONFIG, [{"epoch": 1.0}, {"epoch": 2.0}], {"x": 1}))
    retry = _saver(tmp_path, 3, retry_of=0)
    found = retry.resume()
    assert found is not None and found.epoch == 2 and found.state == {"x": 1}
    # the file is the retry's now: killed before its own first epoch end, its retry resumes it too
    assert [p.name for p in tmp_path.iterdir()] == ["3.pt"] and retry.saved_epoch == 2

    said: list[str] = []
    write(checkpoints.path_of(tmp_path, 5), Checkpoint(1, {**CONFIG, "lr": 0.1}, [], {}))
    assert _saver(tmp_path, 6, retry_of=5, said=said).resume() is None
    assert said == [f"trial 6: {tmp_path / '5.pt'} holds another config; training from epoch 1"]
    assert _saver(tmp_path, 7, retry_of=2).resume() is None  # no file: a fresh start, nothing said


def _study(tmp_path: Path) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path}/optuna.db"
    return optuna.create_study(study_name="s", storage=url), url


def _finished(study: optuna.Study, state: TrialState, **attrs: object) -> int:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    return trial.number


def test_a_sigtermed_trial_with_a_checkpoint_gets_exactly_one_retry_from_the_next_ask(tmp_path: Path) -> None:
    study, url = _study(tmp_path)
    stopped = _finished(study, TrialState.FAIL, **{records.CHECKPOINT_EPOCH_ATTR: 2})
    _finished(study, TrialState.FAIL)  # an ordinary failure is not retried
    lock = backends.store_lock(url)
    asked, _ = ownership.ask(study, lock, budget=5)
    assert asked is not None and asked.user_attrs[records.RETRY_ATTR] == stopped
    assert asked.suggest_float("x", 0, 1) == study.trials[stopped].params["x"]  # its parameters again
    again, _ = ownership.ask(study, lock, budget=5)  # the retry exists: none queued a second time
    assert again is not None and records.RETRY_ATTR not in again.user_attrs


def test_the_sweep_keeps_only_checkpoints_a_trial_may_still_write_or_resume(tmp_path: Path) -> None:
    study, _ = _study(tmp_path)
    done = _finished(study, TrialState.COMPLETE)
    failed = _finished(study, TrialState.FAIL)
    awaiting = _finished(study, TrialState.FAIL, **{records.CHECKPOINT_EPOCH_ATTR: 1})
    killed = _finished(study, TrialState.FAIL)
    study.enqueue_trial(study.trials[killed].params, user_attrs={records.RETRY_ATTR: killed})
    running = study.ask().number  # the queued retry of `killed`, now running
    folder = tmp_path / "exptrack-checkpoints" / "s"
    for number in (done, failed, awaiting, killed, running, 99):  # 99: a trial of no study
        write(checkpoints.path_of(folder, number), Checkpoint(1, CONFIG, [], {}))
    (folder / f"{failed}.pt.tmp-4242").write_bytes(b"a write a kill cut short")

    assert checkpoints.sweep(study, folder) == [done, failed, 99]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.pt" for n in (awaiting, killed, running))
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        study.tell(trial.number, 1.0)
    study.enqueue_trial({"x": 0.5}, user_attrs={records.RETRY_ATTR: awaiting})
    assert checkpoints.sweep(study, folder) == [killed, running]  # the retry ran: not needed now
    awaited = study.ask()
    study.tell(awaited, 1.0)
    assert checkpoints.sweep(study, folder) == [awaiting]
    assert not (tmp_path / "exptrack-checkpoints").exists()  # no empty folders left behind


def test_an_own_training_function_that_opts_in_resumes_exactly_through_the_trials_reporter(
    tmp_path: Path,
) -> None:
    """studies/own_loop.py saves its MLP, AdamW and RNGs through `reporter.checkpoint`: a retry
    resumes after epoch 2 of 3 and reports epochs 1-2 again, ending as the uninterrupted trial."""
    from exptrack import config as cfg
    from exptrack.search.trial_reporter import TrialReporter
    from studies.own_loop import train

    study, _ = _study(tmp_path)
    config = cfg.TrialConfig(
        epochs=3, subset=200, lr=0.01, batch_size=32, params={"hidden": 16, "dropout": 0.2}
    )
    folder = tmp_path / "exptrack-checkpoints" / "s"

    def run(retry_of: int | None) -> tuple[optuna.Trial, TrialReporter, float]:
        trial = study.ask()
        saver = checkpoints.TrialCheckpoints(folder, trial.number, retry_of, config.to_dict(), every_s=0)
        reporter = TrialReporter(trial, None, None, ["val_accuracy"], 3, custom=True, saved=saver)
        return trial, reporter, train(config, reporter)

    whole, whole_reporter, whole_value = run(None)  # leaves its epoch 2 checkpoint (0.pt)
    retry, retry_reporter, retry_value = run(whole.number)
    assert retry_value == whole_value  # exact: the same batches (torch's generator), weights, moments
    assert retry_reporter.history == whole_reporter.history  # epochs 1-2 carried, epoch 3 trained
    stored = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert stored[retry.number].intermediate_values == stored[whole.number].intermediate_values
    assert stored[retry.number].user_attrs[records.RESUMED_ATTR] == 2
