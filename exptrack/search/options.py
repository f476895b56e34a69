"""`SearchOptions`: what one `exp search` (or `exptrack.run_search(...)`) is asked to do, built by
keyword, with the defaults of its counts and times in one place; `Order`: what a `--workers`
worker is asked to do, as the JSON the coordinator hands it (`search.worker`)."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exptrack.errors import UserError
from exptrack.stores.url import resolve_storage, resolve_tracking
from exptrack.study import Study, load_study_file

MAX_CONSECUTIVE_FAILURES = 5
# A worker killed on another machine: its trial is failed and retried this long after its last
# heartbeat. Minutes: a trial's heartbeat must not miss it while its database restarts.
GRACE_PERIOD_S = 180
# Per checkpoint: resnet50 fine-tuned whole with AdamW is 25.6M params x 4 B x 3 (weights and two
# moments) = 307 MB, so 1024 MB keeps every built-in backbone's; a bigger one is said and skipped.
CHECKPOINT_MB = 1024
MAX_CHECKPOINT_MB = 1 << 20  # 1 TiB: past this the flag is a typo
# Seconds of training between two checkpoints (an epoch end at least this long after the last one
# is saved): resnet18 with AdamW's moments (128 MB) took 0.8-1.3 s to write on 2 shared cores at
# load 7, 2 % of a minute; a trial of short epochs saves at most once a minute and a kill loses
# at most a minute and an epoch. 0: every epoch end.
CHECKPOINT_EVERY_S = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)  # by keyword: 20 fields, several of one type
class SearchOptions:
    trials: int
    timeout: float | None = None  # seconds for this invocation
    storage: str | None = None
    study_name: str | None = None
    sampler: str | None = None  # None: the study file's choice
    pruner: str | None = None
    seed: int | None = None
    max_failures: int = MAX_CONSECUTIVE_FAILURES  # consecutive failed trials that stop the search
    new_study: bool = False  # a changed study runs as NAME-2 instead of being refused
    worker: bool = False  # one of several processes: the coordinator closes the study's run
    tracking_uri: str | None = None
    tracking: bool = True  # False: Optuna records only (--no-tracking)
    workers: int = 1  # processes working on the study at once
    grace_period: int = GRACE_PERIOD_S  # seconds without a heartbeat before a trial counts as abandoned
    gpus: str | None = None  # `all` or `0,1`: one worker per GPU slot on this machine
    per_gpu: int = 1  # workers per GPU
    profile_trials: int = 0  # trace the first K trials this invocation runs (torch.profiler)
    enqueue: tuple[Path, ...] = ()  # config files or directories queued as the next trials
    from_study: str | None = None  # an earlier study whose best trials are queued first
    from_top: int = 3  # how many of them
    checkpoint_mb: int = CHECKPOINT_MB  # a trial's checkpoint over this is not kept; 0: no checkpoints
    checkpoint_every: float = CHECKPOINT_EVERY_S  # seconds of training between two checkpoints

    def resolved(self) -> SearchOptions:
        """These options with both stores resolved (flag, environment variable, default), once,
        where a search starts: everything after it, and its workers, reads the same URLs."""
        return dataclasses.replace(
            self, storage=resolve_storage(self.storage), tracking_uri=resolve_tracking(self.tracking_uri)
        )


@dataclasses.dataclass(frozen=True)
class Order:
    """What one worker is asked to do. `study` is a study file's path (the worker imports it, so the
    samplers or losses it registers exist there too) or a `Study`'s fields (one built in Python)."""

    study: str | dict[str, Any]
    overrides: Mapping[str, Any]
    options: SearchOptions
    dashboard: str | None = None  # "module:function" of the run's DashboardFactory

    def to_json(self) -> str:
        options = dataclasses.asdict(self.options)
        options["enqueue"] = [str(path) for path in self.options.enqueue]
        return json.dumps({**dataclasses.asdict(self), "options": options})

    @staticmethod
    def from_json(text: str) -> Order:
        raw = json.loads(text)
        options = dict(raw["options"], enqueue=tuple(Path(p) for p in raw["options"]["enqueue"]))
        return Order(raw["study"], raw["overrides"], SearchOptions(**options), raw["dashboard"])

    def load_study(self) -> Study:
        if isinstance(self.study, str):
            return load_study_file(Path(self.study))
        return Study(**self.study)

    def dashboard_factory(self) -> Callable[..., Any] | None:
        """The coordinator's dashboard factory, imported by name (a study file names no code here)."""
        if self.dashboard is None:
            return None
        module, _, attribute = self.dashboard.partition(":")
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def study_source(study: Study | Path) -> str | dict[str, Any]:
    """How a worker finds the study: its file when it has one, else its fields (JSON values)."""
    if isinstance(study, Path):
        return str(study.resolve())
    if study.source_path is not None:
        return str(study.source_path)
    fields = {f.name: getattr(study, f.name) for f in dataclasses.fields(study)}
    try:
        json.dumps(fields)
    except TypeError as exc:
        raise UserError(
            f"Study {study.name!r} holds a value workers cannot be sent ({exc}); put it in a study file "
            "and pass its path"
        ) from exc
    return fields


def factory_name(factory: Callable[..., Any] | None) -> str | None:
    """A dashboard factory by name, for a worker to import (it must be a module-level function)."""
    return None if factory is None else f"{factory.__module__}:{factory.__qualname__}"
