"""Search: the Optuna side of `exp search`. The search loop and its trial budget (`loop`), one
trial ask -> fit -> tell on a frozen context, handing back its outcome (`trial`), creating or
joining the study (`study_setup`), the study's MLflow parent run and dashboard (`study_run`),
`SearchOptions` and their defaults (`options`), search spaces (`space`), samplers and pruners, the checks made
before any store is created (`preflight`), the repair of what dead processes left (`repair`),
refusing a changed study (`changed_study`), who owns a trial (`ownership`, under the store lock of
`stores.backends`), several worker processes (`workers`) and where each runs (`slots`), constraints
(`feasibility`), warm starts (`warmstart`) and signals. `run.run_search` is the one entry point
the CLI calls; the Python API's `exptrack.run_search(study, trials=...)` (`exptrack.api.run_search`)
calls it too, and a `--workers` worker is `python -m exptrack.search.worker` (`worker`).

May import `training`, `tracking`, `records` and the core modules; never `results` or `cli`.
"""
