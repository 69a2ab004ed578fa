"""Probes that prove the intake opens no file and no connection (XML-SECURITY.md §7 item 4).

* ``Canary``: a file with unique content, watched with Linux inotify (``IN_OPEN | IN_ACCESS``). inotify is
  kernel-level, so it sees libxml2's C ``open()`` as well as Python's; ``touched()`` drains the events.
* ``Listener``: a loopback TCP listener. In ``http`` mode it answers every request with a DTD/XSD-shaped body
  that carries the canary content, so a fetch would both be counted and leak the canary. ``connections()``
  counts accepted connections *and* handshakes still waiting in the backlog, so no race with the accept
  thread can hide one.

Both have positive controls in the tests (a Python ``open()`` is seen, a ``socket.connect`` is counted).
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import uuid
from pathlib import Path

IN_ACCESS = 0x001
IN_OPEN = 0x020
IN_NONBLOCK = os.O_NONBLOCK


class Canary:
    """A file whose content must never show up anywhere, and whose every open is recorded."""

    def __init__(self, directory: Path, name: str = "canary.txt") -> None:
        self.secret = f"CANARY-{uuid.uuid4().hex}"
        self.path = directory / name
        # Well-formed as an external DTD, an external entity and a schema, so that a loader would not stop
        # early: whatever read it would get the secret into a tree, an attribute default or an error message.
        self.body = f'<!ENTITY leak "{self.secret}"><!ATTLIST r leak CDATA "{self.secret}">\n{self.secret}\n'.encode()
        self.path.write_bytes(self.body)
        self.url = self.path.as_uri()
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self._fd, os.fsencode(self.path), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")

    def touched(self) -> list[int]:
        """The inotify event masks since the last call (empty: nobody opened or read the file)."""
        masks: list[int] = []
        while True:
            try:
                buf = os.read(self._fd, 4096)
            except BlockingIOError:
                return masks
            pos = 0
            while pos + 16 <= len(buf):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", buf, pos)
                masks.append(mask)
                pos += 16 + length

    def close(self) -> None:
        os.close(self._fd)


class Listener:
    """A loopback TCP (or minimal HTTP) server that records every connection made to it."""

    def __init__(self, canary: Canary, *, http: bool) -> None:
        self.canary = canary
        self.http = http
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"listener-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._sock], [], [], 0.05)[0]:
                continue
            with self._lock:  # accept and count atomically, so connections() never misses one in between
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, OSError):
                    continue
                self.accepted += 1
            with conn:
                conn.settimeout(1.0)
                try:
                    request = conn.recv(4096)
                except OSError:
                    request = b""
                with self._lock:
                    self.requests.append(request)
                if self.http:
                    body = self.canary.body  # never re-read the file: only the code under test may touch it
                    conn.sendall(
                        b"HTTP/1.0 200 OK\r\nContent-Type: application/xml-dtd\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )

    def connections(self) -> int:
        """Connections accepted so far plus any completed handshake still queued in the backlog."""
        with self._lock:
            pending = 1 if select.select([self._sock], [], [], 0)[0] else 0
            return self.accepted + pending

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
