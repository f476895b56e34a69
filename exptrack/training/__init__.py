"""Training: one `TrialConfig` in, per-epoch metrics out through a reporter (`fit.fit`), with the
datasets, image files, batching, backbones, losses, weight sources and profiling it is built from.
`objective` is the contract every training function meets (`objective(config, reporter)`, a
study's own or the built-in `finetune`), so the search and `exp train` call any of them alike.

May import the core modules (`config`, `errors`, `registry`) and nothing else of exptrack; never
optuna or mlflow, directly or through anything it imports (`tests/core/test_layering.py`), so `fit`
runs on its own, as `exp train` and the tests use it.
"""
