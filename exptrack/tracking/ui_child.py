"""The `mlflow server` process behind `exp ui`, tied to exp ui's life: a server left running on the
port after exp ui was killed made the next `exp ui` fail with "Address already in use".

Two ways to learn that exp ui is gone, both ending in SIGTERM to this process, which MLflow's
server passes on to its uvicorn process before it exits:
- Linux: the kernel signals this process when its parent dies, even by SIGKILL (PR_SET_PDEATHSIG);
- anywhere: stdin is a pipe only exp ui writes to, so reading EOF means exp ui has exited.

Run by `ui_server`: python -m exptrack.tracking.ui_child PARENT_PID -- <mlflow server arguments>
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from exptrack import processes


def die_with(parent: int) -> None:
    """Arrange SIGTERM for this process when `parent` dies; exit now if it already has."""
    processes.signal_on_parent_death(signal.SIGTERM)  # outside Linux: the pipe remains
    if os.getppid() != parent:  # exp ui died before prctl took effect
        sys.exit(0)
    threading.Thread(target=_terminate_on_eof, daemon=True, name="exp-ui-watch").start()


def _terminate_on_eof() -> None:
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    parent, separator, server_args = argv[0], argv[1], argv[2:]
    assert separator == "--", argv
    die_with(int(parent))
    from mlflow.cli import cli

    cli.main(args=["server", *server_args], prog_name="mlflow")


if __name__ == "__main__":
    main(sys.argv[1:])
