"""exptrack: hyperparameter search and experiment tracking for PyTorch fine-tuning.

A study file imports `Study` from here; everything else is reached through the `exp` CLI.
"""

from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.study import Study

__all__ = ["Study", "TrialConfig", "UserError"]
__version__ = "0.1.0"
