"""How a store call ends when the store cannot serve it, in one line and exit 2 (a `UserError`):
a database gone past the wait (`locks.outage_s()`), a full disk (never waited out: it does not
clear by itself, and waiting only holds the trial), a damaged file. Each backend module says which
of its errors is which (`is_disk_full`, `is_damaged`, `is_outage`); this module words the ending."""

from __future__ import annotations

from exptrack.errors import first_line, redact
from exptrack.stores import locks, postgresql, sqlite
from exptrack.stores.locks import StoreDamaged, StoreFault, StoreFull, StoreUnavailable
from exptrack.stores.url import parse

RESUME = "re-run the same command: the study resumes"
__all__ = ["StoreDamaged", "StoreFault", "StoreFull", "StoreUnavailable", "ending", "kind", "raise_at_once"]


def kind(exc: BaseException, url: str) -> str | None:
    """'full', 'damaged' or 'outage' for a store error of the backend at `url`; None for others."""
    module = sqlite if parse(url).path is not None else postgresql
    if module.is_disk_full(exc):
        return "full"
    if module.is_damaged(exc):
        return "damaged"
    if module.is_outage(exc):
        return "outage"
    return None


def ending(exc: BaseException, url: str, what: str, waited_s: float) -> StoreFault | None:
    """The one-line error that ends a store call which failed with `exc` after `waited_s` seconds
    of waiting; None when `exc` is no store fault (a bug or a bad request: raised as it is)."""
    found = kind(exc, url)
    store = f"{what} {redact(url)}"
    reason = _driver_reason(exc)
    if found == "full":
        where = parse(url).path
        room = f"on the disk of {where.resolve().parent}" if where is not None else "on the database server"
        return StoreFull(
            f"{store}: the disk is full ({reason}); not waited out: free space {room} and {RESUME}"
        )
    if found == "damaged":
        return StoreDamaged(
            f"{store} is damaged ({reason}); restore a backup or recover it "
            "(sqlite3 FILE .recover | sqlite3 NEW), then point the command at the good copy"
        )
    if found == "outage":
        return StoreUnavailable(
            f"{store} unreachable; waited {waited_s:.0f} s ({type(exc).__name__}); "
            f"start it and {RESUME} (the wait is {locks.WAIT_ENV}={locks.outage_s():g} seconds)"
        )
    return None


def raise_at_once(exc: BaseException, url: str, what: str) -> None:
    """Raise the one-line ending of a full disk or a damaged store (which no wait clears) found in
    `exc`; return for anything else, which the caller raises or words as it does."""
    if isinstance(exc, Exception) and kind(exc, url) in ("full", "damaged"):
        raise ending(exc, url, what, 0.0) from exc  # type: ignore[misc]


def _driver_reason(exc: BaseException) -> str:
    """The database driver's own words (`database or disk is full`), not a wrapper's: SQLAlchemy
    and Optuna wrap them in sentences about commits."""
    for seen in reversed(locks.chain(exc)):
        if type(seen).__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2") or isinstance(
            seen, OSError
        ):
            return first_line(seen, 120)
    return first_line(exc, 120)
