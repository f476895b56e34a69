"""exptrack: hyperparameter search and experiment tracking for PyTorch fine-tuning.

A study file imports `Study` from here. From Python, `exptrack.search(study, trials=...)` runs a
study and `exptrack.trials(name)` reads its trials (`exptrack.api`, imported on first use, so
importing exptrack stays light); everything else is reached through the `exp` CLI.
"""

import types
from typing import Any

from exptrack import search as _search_package  # the package of the search loop (light: no imports)
from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.study import Study


class _CallablePackage(types.ModuleType):
    """`exptrack.search` is the search package and, called, the API's `search`: a plain function
    of that name would be replaced by the package the first time the package is imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from exptrack import api

        return api.search(*args, **kwargs)


_search_package.__class__ = _CallablePackage  # module __class__ assignment: Python's own hook


def trials(*args: Any, **kwargs: Any) -> Any:
    """A study's trials as a DataFrame, as `exp trials` shows them (see `exptrack.api.trials`)."""
    from exptrack import api

    return api.trials(*args, **kwargs)


search = _search_package
__all__ = ["Study", "TrialConfig", "UserError", "search", "trials"]
__version__ = "0.1.0"
