"""Tracking: every MLflow call. The domain API that owns the tag layout (`runs`: the study's
parent run, one nested run per trial, an `exp train` run, each opened and closed with its status),
the `Tracker`'s guarded writes by run id (`tracker`), its background writer (`writer`), a run's
files (`artifacts`) and dataset input (`dataset_inputs`), system metrics (`system_metrics`), reads
for results commands (`queries`), logged models and the registry, and the MLflow UI server behind
`exp ui`.

May import `records` and the core modules; `import mlflow` appears nowhere outside this package.
Nothing here imports torch at module level, so the results tables stay fast.
"""
