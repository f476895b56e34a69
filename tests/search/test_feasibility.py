"""Infeasible trials teach the sampler: constraint values stored on each trial (Optuna's
`set_constraint`) steer TPE away, an out-of-memory trial told as infeasible keeps later
proposals out of the region that ran out of memory, and no infeasible trial is reported as best.

These studies are in-process with a fake objective: what is tested is Optuna's real TPE reading
the records exptrack writes (the same `feasibility` calls a trial makes), so 40 trials take a
second instead of 40 trainings.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from exptrack import study_store
from exptrack.results import export, tables
from exptrack.search import feasibility, samplers
from exptrack.search import space as spaces
from exptrack.study import parse_constraint

TRIALS, LATER = 40, 20  # the last 20 of 40 trials show where the sampler went
SPEED = spaces.parse({"lr": {"float": [0.001, 1.0]}})  # lr > 0: a range config.py enforces
BATCHES = spaces.parse(
    {"lr": {"float": [1e-4, 1e-1], "log": True}, "batch_size": {"choice": [32, 64, 128, 256]}}
)
SLOW = parse_constraint("seconds_per_epoch <= 30", "test")


def tpe_study(space: spaces.SearchSpace, seed: int = 0) -> optuna.Study:
    sampler = samplers.make_sampler("tpe", samplers.SamplerSetup(seed=seed, space=space))
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.set_user_attr("constraints", [str(SLOW)])
    return study


def run_speed_study(study: optuna.Study, constrained: bool = True) -> list[float]:
    """A larger lr scores better but takes 100 x lr seconds per epoch: above 0.3 it breaks the
    constraint. The first three trials are queued far above it. Without `constrained` the
    constraint values are not recorded: the study is a plain maximisation."""
    for lr in (0.9, 0.8, 0.95):
        study.enqueue_trial({"lr": lr})
    proposed = []
    for _ in range(TRIALS):
        trial = study.ask()
        lr = SPEED.sample(trial, {})["lr"]
        if constrained:
            feasibility.record(trial, feasibility.violations([SLOW], {"seconds_per_epoch": 100 * lr}))
        study.tell(trial, lr)
        proposed.append(lr)
    return proposed


def test_a_constraint_the_first_trials_break_steers_the_sampler_and_is_stored_on_each_trial() -> None:
    study = tpe_study(SPEED)
    proposed = run_speed_study(study)
    unconstrained = run_speed_study(tpe_study(SPEED), constrained=False)
    feasible = lambda lrs: sum(lr <= 0.3 for lr in lrs[-LATER:])  # noqa: E731
    assert all(lr > 0.3 for lr in proposed[:3])  # the queued ones break it
    # measured at seeds 0-5: 10-12 of the last 20 feasible with the constraint, 0-1 without
    assert feasible(proposed) >= LATER * 0.45 and feasible(unconstrained) <= 3, (proposed, unconstrained)
    for trial in study.trials:
        violation = trial.constraints["seconds_per_epoch <= 30"]
        assert violation == 100 * trial.params["lr"] - 30 and trial.constraints["out_of_memory"] == 0
        assert study_store.is_feasible(trial) == (trial.params["lr"] <= 0.3)


def test_infeasible_trials_are_never_reported_as_best() -> None:
    study = tpe_study(SPEED)
    run_speed_study(study)
    top_value = max(t.value for t in study.trials if t.value is not None)
    assert top_value > 0.3  # an infeasible trial has the highest value
    best = study_store.best_first(study.trials, maximize=True)
    assert best[0].value <= 0.3 and all(study_store.is_feasible(t) for t in best)
    assert study.best_trial.number == best[0].number  # Optuna's own best agrees
    assert [t.number for t in export.best_trials(study, top=3)] == [t.number for t in best[:3]]
    frame = tables.select(tables.trials_frame(study, []), study, sort="best")
    assert frame["feasible"].iloc[0] and frame["number"].iloc[0] == best[0].number
    assert list(frame["feasible"]).index(False) == sum(frame["feasible"])  # infeasible ones last


def run_batch_study(study: optuna.Study, infeasible: bool) -> list[int]:
    """Larger batches score better, but 128 and 256 run out of memory. With `infeasible` the
    trial is told as exptrack tells it (`tell_out_of_memory`), else as a plain FAIL."""
    proposed = []
    for _ in range(TRIALS):
        trial = study.ask()
        config = BATCHES.sample(trial, {})
        proposed.append(config["batch_size"])
        if config["batch_size"] >= 128:
            if infeasible:
                feasibility.tell_out_of_memory(study, trial, [])
            else:
                study.tell(trial, state=TrialState.FAIL)
            continue
        feasibility.record(trial, feasibility.violations([], {}))
        study.tell(trial, config["batch_size"] / 64 - abs(config["lr"] - 0.01))
    return proposed


def test_after_running_out_of_memory_later_proposals_avoid_that_region() -> None:
    taught = run_batch_study(tpe_study(BATCHES), infeasible=True)
    failed = run_batch_study(tpe_study(BATCHES), infeasible=False)
    in_region = lambda proposed: sum(b >= 128 for b in proposed[-LATER:])  # noqa: E731
    # measured at seeds 0-5: 4-9 of the last 20 in the region when told infeasible, 18-20 as FAIL
    # (a FAIL teaches TPE nothing, and it keeps trying the batch sizes it has no record of)
    assert in_region(taught) <= 10 and in_region(failed) >= 15, (taught, failed)


def test_an_out_of_memory_trial_is_infeasible_shown_failed_and_not_counted() -> None:
    study = tpe_study(BATCHES)
    study.enqueue_trial({"lr": 0.01, "batch_size": 64})
    study.enqueue_trial({"lr": 0.01, "batch_size": 256})
    fits = study.ask()
    BATCHES.sample(fits, {})
    feasibility.record(fits, feasibility.violations([SLOW], {"seconds_per_epoch": 12.0}))
    study.tell(fits, 0.75)
    too_big = study.ask()
    BATCHES.sample(too_big, {})
    feasibility.tell_out_of_memory(study, too_big, [SLOW])

    oom = study.trials[1]
    assert oom.state == TrialState.COMPLETE and oom.values == [0.75]  # a placeholder: the worst real value
    assert oom.constraints == {"seconds_per_epoch <= 30": 0.0, "out_of_memory": 1.0}
    assert study_store.out_of_memory(oom) and study_store.state_name(oom) == "FAIL"
    assert study_store.counted_trials(study) == 1  # it does not use up --trials
    assert study.best_trial.number == 0
    row = tables.trials_frame(study, []).set_index("number").loc[1]
    assert row["state"] == "FAIL" and row["feasible"] == False  # noqa: E712
    assert row["value"] != row["value"]  # NaN: the placeholder is not shown
