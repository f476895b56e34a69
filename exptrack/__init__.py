"""exptrack: hyperparameter search and experiment tracking for PyTorch fine-tuning.

A study file imports `Study` from here. From Python, `exptrack.run_search(study, trials=...)` runs
a study and `exptrack.trials(name)` reads its trials (`exptrack.api`, imported on first use, so
importing exptrack stays light); everything else is reached through the `exp` CLI.

`exptrack.search` is the search package, not a function: Python sets a package's attribute to each
subpackage it imports, so a function of that name would be replaced by the package the first time
anything imports `exptrack.search.*` (CONTRIBUTING.md, "Python API names").
"""

from typing import Any

from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.study import Study


def run_search(*args: Any, **kwargs: Any) -> Any:
    """Tune a study from Python as `exp search` does (see `exptrack.api.run_search`)."""
    from exptrack import api

    return api.run_search(*args, **kwargs)


def trials(*args: Any, **kwargs: Any) -> Any:
    """A study's trials as a DataFrame, as `exp trials` shows them (see `exptrack.api.trials`)."""
    from exptrack import api

    return api.trials(*args, **kwargs)


__all__ = ["Study", "TrialConfig", "UserError", "run_search", "trials"]
__version__ = "0.1.0"
