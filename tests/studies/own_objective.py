"""Test-only study with its own training function, named "module:function" (own_objective_train.py
beside this file): each trial's `quality` decides its per-epoch score, so pruning is deterministic.

Run: exp search tests/studies/own_objective.py --trials 3
"""

from exptrack import Study

study = Study(
    name="own_objective",
    search_space="own_objective.yaml",
    objective="own_objective_train:train",
    metric="score",
    direction="maximize",
    fixed={"epochs": 3},
    # trial 0 sets the median (0.9 each epoch); trial 1's quality is negative: its function
    # raises, a FAILED trial with its traceback; trial 2 reports 0.1 at epoch 1, below 0.9: pruned
    starting_points=[{"params": {"quality": q}} for q in (0.9, -1.0, 0.1)],
    pruner="median",
    pruner_options={"n_startup_trials": 1, "n_warmup_steps": 0},
)
