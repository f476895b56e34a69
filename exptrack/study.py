"""`Study`: what a study file declares (what to tune, not how), loading one by path, `--set` overrides."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from exptrack import config as cfg
from exptrack.errors import UserError

METRICS = ("val_accuracy", "val_loss", "train_loss")
DIRECTIONS = ("maximize", "minimize")


@dataclasses.dataclass(frozen=True)
class Study:
    """A study file's declaration. `fixed` holds the config values that are not searched."""

    name: str
    search_space: str
    metric: str = "val_accuracy"
    direction: str = "maximize"
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pruner: str = "median"
    sampler: str = "tpe"
    dashboard: str | None = "dashboards/study.yaml"
    description: str = ""
    source_path: Path | None = None  # set by load_study_file

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise UserError("Study(name=...) must be a non-empty string")
        if self.metric not in METRICS:
            raise UserError(
                f"Study {self.name!r}: unknown metric {self.metric!r}; use one of {', '.join(METRICS)}"
            )
        if self.direction not in DIRECTIONS:
            raise UserError(
                f"Study {self.name!r}: direction must be maximize or minimize, got {self.direction!r}"
            )
        cfg.from_dict(self.fixed, source=f"Study {self.name!r} fixed")  # type-check early

    def with_overrides(self, overrides: Mapping[str, Any]) -> Study:
        """A copy whose fixed part has `--set` values merged in (checked against TrialConfig)."""
        fixed = cfg.apply_overrides(self.fixed, overrides)
        cfg.from_dict(fixed, source="--set")
        return dataclasses.replace(self, fixed=fixed)

    def resolve(self, relative: str) -> Path:
        """A path named in the study, found from the working directory or next to the study file."""
        path = Path(relative)
        if path.is_absolute():
            return path
        bases = [Path.cwd()]
        if self.source_path is not None:
            bases += [self.source_path.parent, self.source_path.parent.parent]
        for base in bases:
            if (base / path).exists():
                return base / path
        return bases[0] / path

    def dashboard_path(self) -> Path | None:
        """The dashboard file the study names, found as `resolve` finds files; None when it names
        none or the file is absent (the default one is optional)."""
        if not self.dashboard:
            return None
        path = self.resolve(self.dashboard)
        return path.resolve() if path.is_file() else None

    def search_space_path(self) -> Path:
        path = self.resolve(self.search_space)
        if not path.is_file():
            raise UserError(
                f"Study {self.name!r}: search space {self.search_space} not found; fix search_space= in the study file"
            )
        return path


def load_study_file(path: Path) -> Study:
    """Import a study file and return the one `Study` it defines."""
    if not path.exists():
        raise UserError(f"study file {path} does not exist; pass a path like studies/finetune.py")
    if path.is_dir():
        raise UserError(f"{path} is a directory; pass a study file inside it, e.g. {path}/finetune.py")
    module = _import(path)
    found = [v for v in vars(module).values() if isinstance(v, Study)]
    if not found:
        raise UserError(f"{path} defines no Study; add `study = Study(name=..., search_space=...)`")
    if len(found) > 1:
        raise UserError(f"{path} defines {len(found)} Study objects; keep one per study file")
    study = found[0]
    description = study.description or (module.__doc__ or "").strip()
    return dataclasses.replace(study, source_path=path.resolve(), description=description)


def _import(path: Path) -> ModuleType:
    name = f"exptrack_study_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} cannot be imported as Python; a study file is a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: syntax error ({exc.msg}); fix the study file") from exc
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise UserError(f"{path} raised {type(exc).__name__} on import ({exc}); fix the study file") from exc
    return module
