"""`python -m exptrack.search.worker ORDER.json`: one `--workers` worker process. The coordinator
(`workers.run_workers`) writes what it would have parsed from flags as JSON (`Order`: the
study, its `--set` values, the `SearchOptions` with the storage already resolved, the dashboard
factory by name) to a file only its user can read (a storage URL may hold a password, and a
command line is visible to every user in `ps`), so a worker never re-parses flags by spelling and
a search started from Python (`exptrack.run_search(..., workers=K)`) starts its workers the same way.

A worker draws no bar: it prints `trial N: STATE value` lines and warnings on stderr, which the
coordinator's `workers.Relay` reads; an error ends it as `exp` would end (one line, exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from exptrack import config as cfg
from exptrack import processes
from exptrack.errors import UserError, one_line, unexpected_line
from exptrack.search import signals
from exptrack.search.options import Order


class LineProgress:
    """A worker's display: the lines `workers.Relay` reads, unstyled (the coordinator styles them)."""

    def start(self, done: int, total: int, metric: str) -> None:
        pass

    def trial_started(self, number: int, config: cfg.TrialConfig) -> None:
        pass

    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None:
        shown = "" if value is None else f" {value:.4f}"
        self.warn(f"trial {number}: {state}{shown}")

    def warn(self, message: str) -> None:
        print(one_line(message), file=sys.stderr, flush=True)


def work(order: Order) -> None:
    """Run the worker's share of the study, as `exp search` would in this process."""
    from exptrack.search.run import run_search  # after `quiet_libraries`: it loads torch

    progress = LineProgress()
    study = order.load_study()
    summary = run_search(
        study, order.options, order.overrides, progress, progress.warn, order.dashboard_factory()
    )
    if summary.pending:  # its records wait in its journal: the coordinator's summary says so
        from exptrack.search.sync import PENDING_EXIT

        sys.exit(PENDING_EXIT)


def main(argv: list[str] | None = None) -> None:
    """Entry point: as `exp` ends, a UserError is one line and exit 2, a signal 128 + its number."""
    processes.quiet_libraries()
    args = sys.argv[1:] if argv is None else argv
    try:
        work(Order.from_json(Path(args[0]).read_text(encoding="utf-8")))
    except UserError as exc:
        print(one_line(f"error: {exc}"), file=sys.stderr, flush=True)
        sys.exit(2)
    except signals.Interrupted as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(one_line(unexpected_line(exc)), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
