"""The study's plots as one static PNG (`dashboard.png` on the study run), which MLflow's artifact
viewer shows as an image: the plotly page (`dashboard.html`, ~4.7 MB with plotly.js inlined)
previews as a blank pane there (issue 19, item 1). Drawn with matplotlib's Agg canvas, so no
browser is needed; the interactive page stays beside it for a download or `exp report`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import records, study_store

SIZE_IN, DPI = (12.0, 4.5), 100  # 1200 x 450 px: both panels readable in the viewer's pane
GREY = "#bbbbbb"  # pruned and failed trials, as on the HTML page


def overview_png(study: optuna.Study) -> bytes | None:
    """Optimization history and learning curves side by side; None before any trial ended."""
    from matplotlib.figure import Figure

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and not study_store.out_of_memory(t)]
    if not done and not any(t.intermediate_values for t in trials):
        return None
    metric = str(study.user_attrs.get(records.STUDY_METRIC_ATTR, "value"))
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    history, curves = figure.subplots(1, 2)
    _history(history, done, metric, study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    _curves(curves, trials, metric)
    figure.suptitle(f"{study.study_name}: {len(done)} complete trials")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _history(axes: object, done: Sequence[FrozenTrial], metric: str, maximize: bool) -> None:
    """Each complete trial's (first) value by trial number, and the best so far as a step line."""
    numbers = [t.number for t in done]
    values = [t.values[0] for t in done]
    best = [(max if maximize else min)(values[: i + 1]) for i in range(len(values))]
    axes.scatter(numbers, values, label=metric)  # type: ignore[attr-defined]
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")  # type: ignore[attr-defined]
    axes.set(title="optimization history", xlabel="trial", ylabel=metric)  # type: ignore[attr-defined]
    _whole_numbers(axes)
    if done:
        axes.legend()  # type: ignore[attr-defined]


def _curves(axes: object, trials: Sequence[FrozenTrial], metric: str) -> None:
    """The metric per epoch for every trial that reported one; pruned and failed trials grey."""
    epochs = sorted({s for t in trials for s in t.intermediate_values})
    for trial in trials:
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        grey = trial.state != TrialState.COMPLETE
        axes.plot(  # type: ignore[attr-defined]
            steps, [trial.intermediate_values[s] for s in steps], marker="o",
            color=GREY if grey else None, alpha=0.6 if grey else 1.0,
        )  # fmt: skip
    axes.set(title="learning curves (per epoch)", xlabel="epoch", ylabel=metric)  # type: ignore[attr-defined]
    _whole_numbers(axes)
    if 0 < len(epochs) <= 10:  # few epochs: a tick on each (one epoch alone got ticks at 0.945...)
        axes.set_xticks(epochs)  # type: ignore[attr-defined]


def _whole_numbers(axes: object) -> None:
    """Trial numbers and epochs are whole: no tick at 1.5."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # type: ignore[attr-defined]
