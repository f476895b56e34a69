"""The one error type for anything a user can fix: the CLI prints its message and exits 2."""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


class UserError(Exception):
    """A problem the user caused and can fix; the message names the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def redact(text: str) -> str:
    """Replace any password inside a URL (`scheme://user:pw@host`) by `***`."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
