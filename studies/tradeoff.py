"""Accuracy against training time: fine-tune ResNet-18 on digits for the best accuracy at the
fewest seconds per epoch (a Pareto front of configs, two objectives), within a weight budget.

Run: exp search studies/tradeoff.py --trials 30
Shrink it: exp search studies/tradeoff.py --trials 6 --set epochs=1 --set subset=300 --study-name tradeoff-quick
Then: exp trials tradeoff (the pareto column), exp export tradeoff --out front/ (the Pareto set)
"""

from exptrack import Study

study = Study(
    name="tradeoff",
    search_space="search_spaces/tradeoff.yaml",
    objectives={"val_accuracy": "maximize", "seconds_per_epoch": "minimize"},
    # At most ~10.5M trainable weights (resnet18 has 11.2M; freeze_depth >= 3 keeps 10.5M or
    # fewer): AdamW holds two more fp32 copies of each, 3 x 4 B x 10.5M = 126 MB. On a GPU,
    # bound memory itself: "peak_cuda_allocated_mb <= 20000".
    constraints=["trainable_params <= 10.5e6"],
    sampler="nsga2",
    sampler_options={"population_size": 10},  # generations of 10 trials: several in a 30-trial study
    # run first, before NSGA-II's own proposals: a config known to train well
    starting_points=[{"lr": 1.0e-3, "batch_size": 64, "freeze_depth": 3}],
    fixed={
        "backbone": "resnet18",
        "weights": "imagenet",
        "dataset": "digits",
        "image_size": 24,
        "subset": 900,
        "epochs": 2,
    },
    pruner="none",  # several objectives: Optuna's pruners judge one value per epoch
    dashboard="dashboards/tradeoff.yaml",
)
