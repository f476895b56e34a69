"""What a store URL means, and nothing else: a `StoreURL` parsed once at the edge (`url.py`), one
module per backend with its lock, engine settings, outage test and checks (`sqlite.py`,
`postgresql.py`), what a database holds before anything is written into it (`schema.py`), the
Optuna storage opened whole and resilient (`optuna_storage.py`), and the one home of Optuna's
private storage API (`optuna_private.py`). A scheme with no backend module here is refused in one
line: a backend without a cross-process lock would make --trials silently inexact.

May import records and core modules only; search, results and tracking import it.
"""
