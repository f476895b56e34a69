"""`SearchOptions`: what one `exp search` (or `exptrack.search(...)`) is asked to do, built by
keyword, with the defaults of its counts and times in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

MAX_CONSECUTIVE_FAILURES = 5
# A worker killed on another machine: its trial is failed and retried this long after its last
# heartbeat. Minutes: a trial's heartbeat must not miss it while its database restarts.
GRACE_PERIOD_S = 180


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
