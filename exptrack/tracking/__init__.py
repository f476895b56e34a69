"""Tracking: every MLflow call. The `Tracker` (experiments, the study's parent run, one nested
run per trial, metrics, artifacts, statuses), logged models and the registry, and the MLflow UI
server behind `exp ui`.

May import `records` and the core modules; `import mlflow` appears nowhere outside this package.
Nothing here imports torch at module level, so the results tables stay fast.
"""
