"""Files the results commands write where a user's `--out` says (`exp export`'s configs, `exp
report`'s page): checked before any store is read, written whole by a temporary file renamed into
place, and every way that can fail is one line naming the path.

The rename matters twice: a reader never sees half a file, and a symlink already sitting at the
name (`best/trial-000.yaml -> ~/.bashrc`) is replaced, not written through: exptrack follows no
link the user did not name.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from exptrack.config_values import check_text
from exptrack.errors import UserError


def check_path(text: str, flag: str) -> Path:
    """`--out` as typed: non-empty printable text (an empty one meant the working directory)."""
    if not text.strip():
        raise UserError(f"{flag} is empty; pass a path, e.g. {flag} best")
    check_text(text, flag)
    return Path(text)


def check_directory(out: Path, flag: str) -> None:
    """`out` can be a directory of ours: absent (it is created) or a directory."""
    found = _stat(out, flag)
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise UserError(f"{flag} {out} is a file; pass a directory, or - for stdout")


def check_file(target: Path, flag: str, example: str) -> None:
    """`target` can be a file of ours: not an existing directory."""
    found = _stat(target, flag)
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise UserError(f"{flag} {target} is a directory; pass a file name, e.g. {target / example}")


def _stat(path: Path, flag: str) -> os.stat_result | None:
    """What is at `path` (following links: the user named it), None when nothing is; a name too
    long (a 300-byte component: ENAMETOOLONG) or a parent that is a file is one line."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{flag} {path}: {_why(exc)}; pass a path you can write") from exc


def make_directory(out: Path, flag: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # /sys/kernel/x: EACCES even for root; a parent that is a file
        raise UserError(
            f"{flag} {out}: cannot create it ({_why(exc)}); pass a directory you can write"
        ) from exc


def write_file(path: Path, text: str, flag: str) -> None:
    """`text` into `path` through a temporary file in the same directory, renamed over `path`;
    into a device or a pipe (`/dev/null`, `/dev/stdout`, a FIFO) directly: a rename would put a
    plain file in its place (as root, `--out /dev/null` replaced the machine's /dev/null)."""
    if _is_special(path):
        try:
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            raise UserError(f"{flag} {path}: cannot write it ({_why(exc)}); pass a path you can write") from exc
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    except OSError as exc:  # /proc/self: ENOENT; a read-only or full file system
        raise UserError(f"{flag} {path}: cannot write it ({_why(exc)}); pass a path you can write") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o666 & ~_umask())  # mkstemp's 0600, made what write_text makes
            file.write(text)
        os.replace(temporary, path)
    except OSError as exc:  # a directory at `path` (EISDIR), a full disk (ENOSPC)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise UserError(f"{flag} {path}: cannot write it ({_why(exc)}); pass a path you can write") from exc


def _is_special(path: Path) -> bool:
    """Something at `path` (not a link: a link is replaced, never written through) that is neither
    a regular file nor a directory: a character or block device, a FIFO, a socket."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once (the CLI is one thread here)
    os.umask(mask)
    return mask


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
