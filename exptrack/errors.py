"""The one error type for anything a user can fix (the CLI prints its message and exits 2), and
the helpers that keep messages to one line without a password in them."""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
import traceback
from collections.abc import Iterable
from typing import Any

# scheme://user:password@ -- the password runs to the last `@` before a space: drivers such as
# SQLAlchemy's take `/`, `:` and `@` in it unencoded, so a shorter match would print its tail.
_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@")


class UserError(Exception):
    """A problem the user caused and can fix; the message names the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def redact(text: str) -> str:
    """Replace any password inside a URL (`scheme://user:pw@host`) by `***`."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def one_line(text: str) -> str:
    """A message as one printable line, password-free: a newline or a stray byte from a user's
    path or name is shown escaped (`\\n`, `\\udcff`) instead of breaking the line or the encoder."""
    escaped = redact(text).replace("\r", "\\r").replace("\n", "\\n")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


def failure_reason(exc: BaseException) -> str:
    """What ended a trial or run, for its record: `interrupted by SIGTERM` for a signal (a bare
    Ctrl-C: SIGINT), else the exception's type and message; redacted before it is cut to 1,000
    characters, so a cut cannot split a URL's password from its `@`."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted by {str(exc) or 'SIGINT'}"
    return redact(f"{type(exc).__name__}: {exc}")[:1000]


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line, password-free, for a one-line message; its type when it is silent."""
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)[:limit]


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """` (did you mean 'resnet18'?)` when one of `choices` is close to a mistyped `name`
    (difflib's ratio of at least 0.6, its default: `resnet81` finds `resnet18`), else ''."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unexpected_line(exc: BaseException) -> str:
    """The last resort's one line (`exp`, a `--workers` worker): the error, and a file holding its
    traceback (a file, not the terminal: it ran to 700 lines through torch and MLflow)."""
    text = redact("".join(traceback.format_exception(exc)))
    how = "exp --debug or EXPTRACK_DEBUG=1 prints it; please report it with the file"
    try:
        fd, path = tempfile.mkstemp(prefix="exptrack-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(text)
    except OSError as error:  # a full disk: the one line still comes
        saved = f"the traceback could not be saved ({error.strerror}); {how}"
    else:
        saved = f"full traceback in {path} ({how})"
    return f"error: unexpected {type(exc).__name__}: {first_line(exc)}; {saved}"


def shown(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: repr (a newline or a stray byte stays visible, on one line),
    cut to `limit` characters so a 5000-digit number or a megabyte of text stays one short line."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr of 4,301+ digits raises ValueError
        return f"a number of {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
