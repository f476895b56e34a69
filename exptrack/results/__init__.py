"""Results: what users do after a search. Trials and studies tables (`tables`), best configs as
YAML files (`export`), re-running one as a standalone run (`train_run`, `exp train`), and the
study dashboard (`dashboards`).

May import `training`, `tracking`, `records` and the core modules; never `search` or `cli`.
`tables` and `export` load no torch, so `exp trials`, `exp studies` and `exp export` answer fast.
"""
