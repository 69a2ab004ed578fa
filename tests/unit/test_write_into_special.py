"""An output path that is a device or a FIFO is written into, never renamed over (found when /dev/null on the test
machine had become a regular file: an `--out /dev/null` run as root had replaced it). A FIFO stands for /dev/null
here, so that the test cannot break the machine even when the fix is missing."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.sdk._home import write_private
from hub.trust.keys import write_private_file, write_public_file


@pytest.mark.parametrize("write", [write_public_file, write_private_file, write_private])
def test_a_fifo_output_is_written_into_and_stays_a_fifo(tmp_path: Path, write: Callable[[Path, bytes], None]) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    write(fifo, b"-----BEGIN CERTIFICATE-----\n")
    reader.join(5)  # a writer that renamed over the FIFO leaves the (daemon) reader waiting: got stays empty
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert got == [b"-----BEGIN CERTIFICATE-----\n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary file left beside it
