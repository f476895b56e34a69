"""`exp confirm NAME --top K --seeds S`: the top K configs of a study trained again with S fresh
seeds each, scored on val and on the held-out test split; per config the mean, standard deviation
and 95% t-interval, and whether the top two differ (Welch's t-test).

Each repeat is an MLflow run nested under the study's run beside its trials (role `confirm`,
tagged with the trial it repeats and its seed), not a trial of another Optuna study: a repeat
samples nothing and prunes nothing, it must score the test split (which no search trial may),
and the study's own trials, totals and best value stay the search's. A finished repeat is found
again by its (trial, seed), so re-running the command, or raising --seeds, trains only what is
missing; a repeat whose process died is closed FAILED and trained again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from exptrack import config as cfg
from exptrack import noise, records, study_store
from exptrack.errors import UserError, failure_reason, redact
from exptrack.results import export, train_run
from exptrack.stores import optuna_storage
from exptrack.stores.url import resolve_tracking
from exptrack.study import BUILT_IN_OBJECTIVE, Study
from exptrack.tracking import queries, runs
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit
from exptrack.training import objective as objectives

TEST_OF = {"val_accuracy": "test_accuracy", "val_loss": "test_loss"}  # a val metric's test twin
MAX_SEEDS = 1000  # 1,000 trainings per config is a week of 10-minute runs; 10**9 is a typo


@dataclasses.dataclass(frozen=True)
class Repeat:
    """One training of a trial's config with a fresh seed: its final figures and run."""

    number: int
    seed: int
    figures: Mapping[str, float]  # the last epoch's val figures and the test figures
    run_id: str
    new: bool  # trained by this command (else found finished)


@dataclasses.dataclass(frozen=True)
class Confirmation:
    study: str
    metric: str
    test_metric: str | None
    frame: pd.DataFrame  # one row per config, best confirmed mean first
    lines: list[str]  # per config: `trial 3: val_accuracy 0.9512 ± 0.0123, test_accuracy ...`
    verdict: str  # whether the top two differ
    ran: int
    reused: int


def fresh_seeds(seed: int, count: int) -> list[int]:
    """The trial's seed + 1 .. + count: never the seed the search trained it with, the same list
    on every call (so a re-run finds its repeats), and --seeds 3 after --seeds 2 adds one."""
    return [(seed + k) % (cfg.MAX_SEED + 1) for k in range(1, count + 1)]


def confirm(
    study_name: str,
    top: int,
    seeds: int,
    storage: str | None,
    tracking_uri: str | None,
    warn: Callable[[str], None] = print,
    on_repeat: Callable[[Repeat], None] = lambda repeat: None,
) -> Confirmation:
    """Repeat the `top` best trials' configs with `seeds` fresh seeds each (those not yet
    repeated), summarise them, and record the summary on the study and its MLflow run."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be from 1 to {MAX_SEEDS}, got {seeds}")
    study = optuna_storage.load_existing_study(study_name, storage)
    chosen = export.best_trials(study, top)
    study_file = study.user_attrs.get(records.STUDY_FILE_ATTR)  # what it registers (a loss, a dataset)
    spec = train_run.load_registrations({records.PROVENANCE_STUDY_FILE: study_file}, warn)
    own = _own_objective(study, spec)
    metric = _metric(study, own is not None)
    tracker, opened = _study_run(study, tracking_uri, warn)
    trainer = _Trainer(tracker, opened, study.study_name, own or objectives.finetune, metric, warn)
    repeats = _repeats(study, chosen, seeds, trainer, on_repeat)
    result = summarise(study, chosen, repeats, metric, test=own is None or _scored_test(repeats, metric))
    _record(study, tracker, opened.run_id, result)
    return result


def _own_objective(study: optuna.Study, spec: Study | None) -> objectives.Objective | None:
    """The study's own training function (None: the built-in fine-tuning), from its study file;
    a study recorded as training with its own function whose file cannot be loaded is refused
    rather than fine-tuned in its place."""
    own = spec.objective_function() if spec is not None else None
    recorded = study.user_attrs.get(records.STUDY_TRAINING_ATTR)
    if own is None and recorded not in (None, BUILT_IN_OBJECTIVE):
        raise UserError(
            f"study {study.study_name!r} trains with its own function {recorded}, and its study file "
            f"({study.user_attrs.get(records.STUDY_FILE_ATTR)}) cannot be loaded; restore it"
        )
    return own


@dataclasses.dataclass(frozen=True)
class _Trainer:
    """How a repeat is trained: the study's training function, its runs nested under `opened`."""

    tracker: Tracker
    opened: runs.OpenedRun
    study_name: str
    objective: objectives.Objective
    metric: str
    warn: Callable[[str], None]


def _repeats(
    study: optuna.Study,
    chosen: list[FrozenTrial],
    seeds: int,
    trainer: _Trainer,
    on_repeat: Callable[[Repeat], None],
) -> list[Repeat]:
    """Each chosen config with each fresh seed: the recorded repeat, else one trained now."""
    tracker, opened = trainer.tracker, trainer.opened
    existing = queries.confirm_runs(tracker, opened.experiment_id, opened.run_id)
    closed = runs.close_dead_confirm_runs(tracker, existing)
    if closed:
        trainer.warn(
            f"closed {len(closed)} confirm run(s) left RUNNING by a process that died; training them again"
        )
    done = _finished(existing)
    repeats = []
    for trial in chosen:
        config = export.export_trial(study, trial).config
        for seed in fresh_seeds(config.seed, seeds):
            repeat = done.get((trial.number, seed)) or _train(trainer, trial, config, seed)
            if repeat is not None:
                on_repeat(repeat)
                repeats.append(repeat)
    return repeats


def _metric(study: optuna.Study, own: bool) -> str:
    """The figure repeated: the study's (first) objective, which must be a per-epoch metric (any
    figure a study's own training function reports or returns)."""
    metric = str(study.user_attrs.get(records.STUDY_METRIC_ATTR) or "")
    if metric not in records.EPOCH_METRICS and not (own and metric):
        raise UserError(
            f"study {study.study_name!r} optimises {metric or 'an unrecorded metric'}; exp confirm repeats "
            f"a training metric ({', '.join(records.EPOCH_METRICS)})"
        )
    return metric


def _study_run(
    study: optuna.Study, tracking_uri: str | None, warn: Callable[[str], None]
) -> tuple[Tracker, runs.OpenedRun]:
    """The tracking store and the study's parent run, which the repeats are nested under."""
    tracker = queries.existing_store(tracking_uri, warn)  # never creates a store by looking
    if tracker is not None:
        tracker.check()
    uid = study.user_attrs.get(records.STUDY_UID_ATTR)
    run_id = queries.study_run_id(tracker, study.study_name, uid) if tracker else None
    experiment = tracker.client.get_experiment_by_name(study.study_name) if tracker and run_id else None
    if tracker is None or run_id is None or experiment is None:
        where = redact(resolve_tracking(tracking_uri))
        raise UserError(
            f"study {study.study_name!r} has no MLflow run in {where} to record repeats under "
            "(searched with --no-tracking, or another --tracking-uri); pass the --tracking-uri it used"
        )
    return tracker, runs.OpenedRun(str(experiment.experiment_id), run_id)


def _finished(existing: list[Any]) -> dict[tuple[int, int], Repeat]:
    """(trial, seed) -> the finished repeat already recorded, with its figures."""
    found = queries.finished_repeats(existing)
    return {key: Repeat(*key, metrics, run_id, new=False) for key, (run_id, metrics) in found.items()}


def _train(trainer: _Trainer, trial: FrozenTrial, config: cfg.TrialConfig, seed: int) -> Repeat | None:
    """Train the trial's config with `seed` (its config's seed field: the built-in and a study's
    own function both seed from it) as a confirm run, scoring the test split at the end. A
    repeat that fails (a NaN loss) is recorded FAILED and left out, with a warning; Ctrl-C or
    SIGTERM closes its run FAILED and stops the command."""
    tracker, warn, study_name = trainer.tracker, trainer.warn, trainer.study_name
    config = config.replace(seed=seed)
    if trainer.objective is objectives.finetune:  # weights are the built-in's
        config = fit.with_available_weights(config, warn)
    provenance = {records.PROVENANCE_STUDY: study_name, records.PROVENANCE_TRIAL: trial.number}
    facts = runs.RepeatFacts(
        study_name, trial.number, seed, config.flat_params(), cfg.dump_yaml(config, provenance)
    )
    run_id = runs.open_confirm_run(tracker, trainer.opened, facts)
    reporter = train_run.RunReporter(tracker, run_id, warn)  # scores the test split at the end
    try:
        returned = trainer.objective(config, reporter)
        final = objectives.final_values(returned, reporter.last_report, trainer.metric)
    except Exception as exc:
        runs.fail_run(tracker, run_id, failure_reason(exc))
        warn(f"trial {trial.number} seed {seed} failed ({failure_reason(exc)}); left out of the summary")
        return None
    except BaseException as exc:
        runs.fail_run(tracker, run_id, failure_reason(exc))
        raise
    tracker.log_epoch(run_id, reporter.epochs, reporter.test)
    runs.finish_run(tracker, run_id, "COMPLETE", {}, reporter.figures)
    figures = {**final, **reporter.test}
    return Repeat(trial.number, seed, figures, run_id, new=True)


def _scored_test(repeats: list[Repeat], metric: str) -> bool:
    """Did a study's own function score the test split (`reporter.log_test`) in any repeat?"""
    return any(TEST_OF.get(metric) in r.figures for r in repeats)


def summarise(
    study: optuna.Study, chosen: list[FrozenTrial], repeats: list[Repeat], metric: str, test: bool = True
) -> Confirmation:
    """Per config: the interval of the metric and of its test twin (`test`: the repeats scored the
    test split); the top two compared."""
    test_metric = TEST_OF.get(metric) if test else None
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    values = {t.number: _values(repeats, t.number, metric) for t in chosen}
    rows = [_row(t, repeats, metric, test_metric) for t in chosen]
    frame = pd.DataFrame(rows)
    key = f"{metric}_mean"
    frame = frame.sort_values(key, ascending=not maximize, na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)
    lines = [_line(row, metric, test_metric) for row in frame.to_dict("records")]
    order = [int(n) for n in frame["trial"]]
    verdict = _verdict(order, values, metric)
    ran = sum(r.new for r in repeats)
    return Confirmation(study.study_name, metric, test_metric, frame, lines, verdict, ran, len(repeats) - ran)


def _values(repeats: list[Repeat], number: int, metric: str) -> list[float]:
    return [
        r.figures[metric]
        for r in repeats
        if r.number == number and math.isfinite(r.figures.get(metric, math.nan))
    ]


def _row(trial: FrozenTrial, repeats: list[Repeat], metric: str, test_metric: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": trial.number, "seeds": len(_values(repeats, trial.number, metric))}
    row["searched"] = trial.values[0] if trial.values else math.nan  # the search's (selected) value
    for name in (metric, test_metric) if test_metric else (metric,):
        found = noise.interval(_values(repeats, trial.number, name))
        row.update({f"{name}_mean": found.mean, f"{name}_sd": found.sd})
        row.update({f"{name}_ci_low": found.low, f"{name}_ci_high": found.high})
    return {**row, **trial.params}


def _interval(row: Mapping[str, Any], name: str) -> noise.Interval:
    return noise.Interval(
        int(row["seeds"]),
        row[f"{name}_mean"],
        row[f"{name}_sd"],
        row[f"{name}_ci_low"],
        row[f"{name}_ci_high"],
    )


def _line(row: Mapping[str, Any], metric: str, test_metric: str | None) -> str:
    """`trial 3: val_accuracy 0.9512 ± 0.0123, test_accuracy 0.9400 ± 0.0200 (3 seeds)`."""
    parts = [f"{name} {_interval(row, name).shown()}" for name in (metric, test_metric) if name]
    return f"trial {row['trial']}: {', '.join(parts)} (mean ± 95% t-interval, {row['seeds']} seeds)"


def _verdict(order: list[int], values: Mapping[int, list[float]], metric: str) -> str:
    """Whether the two best configs by confirmed mean differ: Welch's t-test at 5%."""
    if len(order) < 2:
        return "one config: nothing to compare it with (use --top 2 or more)"
    a, b = order[:2]
    p = noise.welch_p(values[a], values[b])
    pair = f"top two (trial {a} vs trial {b})"
    if math.isnan(p):
        return f"{pair}: cannot be told apart with fewer than 2 seeds each; use --seeds 2 or more"
    if noise.differ(p):
        return f"{pair} differ on {metric}: Welch's t-test p={p:.3g} < 0.05"
    return (
        f"{pair} do not differ on {metric}: Welch's t-test p={p:.3g} >= 0.05, within noise of each "
        "other; more seeds narrow the intervals"
    )


def _record(study: optuna.Study, tracker: Tracker, study_run_id: str, result: Confirmation) -> None:
    """The summary on the study (trial -> figures, for `exp export` and the search summary) and on
    its MLflow run (the verdict and lines as a tag, the table as confirm.csv)."""
    confirmed: dict[str, Any] = dict(study_store.confirmed(study))
    for row in result.frame.to_dict("records"):
        figures = {
            k: v
            for k, v in row.items()
            if k == "seeds" or k.endswith(("_mean", "_sd", "_ci_low", "_ci_high"))
        }
        confirmed[str(row["trial"])] = {k: (None if _nan(v) else v) for k, v in figures.items()}
    study.set_user_attr(records.CONFIRMED_ATTR, confirmed)
    summary = "\n".join([result.verdict, *result.lines])
    runs.record_confirmation(tracker, study_run_id, summary, result.frame.to_csv(index=False))


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
