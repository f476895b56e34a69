"""`study_store.TrialRecord`: what the search filed on a trial, read typed, as every reader
(tables, export, dashboards, the summary, repairs) now reads it."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from exptrack import records, study_store
from exptrack.study_store import record


def test_a_trial_record_reads_what_the_search_filed_typed() -> None:
    filed = {
        records.CONFIG_ATTR: {"lr": 0.01, "weights": "none"},
        records.RUN_ID_ATTR: "abc123",
        records.PROFILE_ATTR: {"seconds_per_epoch": 1.5},
        records.WEIGHTS_REQUESTED: "imagenet",
        records.CLASSES_ATTR: 10,
        records.RETRY_ATTR: 3,
        records.WORKER_ATTR: "host:12:34",
    }
    trial = create_trial(
        value=0.9, params={"lr": 0.01}, distributions={"lr": FloatDistribution(1e-5, 1.0)}, user_attrs=filed
    )
    seen = record(trial)
    assert (seen.number, seen.state, seen.run_id, seen.worker) == (
        trial.number,
        TrialState.COMPLETE,
        "abc123",
        "host:12:34",
    )
    assert seen.config == {"lr": 0.01, "weights": "none"} and seen.costs == {"seconds_per_epoch": 1.5}
    assert (seen.weights_requested, seen.classes, seen.retry_of, seen.is_retry) == ("imagenet", 10, "3", True)
    assert seen.feasible and seen.fail_reason is None
    seen.config["lr"] = 1.0  # a copy: the trial's record is unchanged
    assert record(trial).config["lr"] == 0.01


def test_a_bare_or_out_of_memory_trial_reads_as_a_user_sees_it() -> None:
    bare = record(create_trial(state=TrialState.FAIL, user_attrs={records.FAIL_REASON_ATTR: "ValueError: x"}))
    assert (bare.config, bare.costs, bare.run_id, bare.classes) == ({}, {}, None, None)
    assert (bare.has_config, bare.has_costs, bare.is_retry, bare.fail_reason) == (
        False,
        False,
        False,
        "ValueError: x",
    )
    oom = create_trial(value=0.0, constraints={records.OUT_OF_MEMORY: 1.0})
    # an out-of-memory trial is COMPLETE in Optuna only so the sampler learns from it: FAIL here
    assert oom.state == TrialState.COMPLETE and record(oom).state == TrialState.FAIL
    assert not record(oom).feasible


def test_a_retry_reads_back_the_number_it_repeats_trial_0_too() -> None:
    study = optuna.create_study()  # a real (in-memory) Optuna study: the store the search uses
    space = {"lr": FloatDistribution(1e-5, 1.0)}
    first = study.ask(space)
    study.tell(first, state=TrialState.FAIL)
    study_store.enqueue_retry(study, study.trials[0])
    retry = study.ask(space)  # the live trial the next search gets, with the failed one's params
    assert study_store.retry_number(retry) == 0 and retry.params == study.trials[0].params
    study.tell(retry, 0.5)
    assert [record(t).retry_of_number for t in study.trials] == [None, 0]
    assert [record(t).dropped for t in study.trials] == [False, False]
