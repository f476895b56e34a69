"""`--out` naming a device or a pipe is written into, never replaced: a rename over `/dev/null`
(as root) put a plain file in the machine's /dev/null, which broke every later `> /dev/null`."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from exptrack.results import output


def test_a_fifo_named_by_out_is_written_into_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    output.write_file(fifo, "page\n", "--out")
    reader.join(timeout=30)
    assert received == ["page\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left beside it


def test_dev_null_stays_a_device() -> None:
    output.write_file(Path("/dev/null"), "page\n", "--out")
    assert stat.S_ISCHR(Path("/dev/null").lstat().st_mode)
