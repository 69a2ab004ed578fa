"""Where the hub's processes write their metrics files, without importing ``prometheus_client``: whether a process
writes files (multiprocess mode) or keeps its metrics in memory is chosen when that library is first imported, so a
command must prepare the directory before it imports ``hub.metrics`` (``hub gateway``: ``prepare_standalone``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = [
    "MULTIPROC_ENV",
    "gateway_metrics_dir",
    "gateways_metrics_root",
    "prepare_standalone",
    "running_gateway_dirs",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def gateways_metrics_root(settings: Settings) -> Path:
    """``<state_dir>/metrics-gateways``: a directory per gateway started on its own (``gateway_metrics_dir``), beside
    ``hub run``'s ``<state_dir>/metrics`` (which its supervisor empties at each start)."""
    return settings.state_dir / "metrics-gateways"


def gateway_metrics_dir(settings: Settings, port: int) -> Path:
    """Where a gateway started on its own (``hub gateway``) on ``port`` and its examiner processes write their
    metrics; the ops app of the machine reads it while that gateway runs (``running_gateway_dirs``)."""
    return gateways_metrics_root(settings) / str(port)


#: The lock a gateway holds on its metrics directory while it runs (``prepare_standalone``), open until it exits.
_held: list[int] = []


def prepare_standalone(path: Path) -> str | None:
    """``hub gateway``, before anything imported ``prometheus_client``: take ``path`` for this gateway and point
    ``PROMETHEUS_MULTIPROC_DIR`` at it, so that the ops page of the machine shows this gateway's metrics as it shows
    those of ``hub run --gateway`` (they had stayed in the process, where nothing served them). The directory is
    emptied (an earlier run's counters are not this run's) only under an exclusive lock (``<path>.lock``, held until
    the process exits): a second gateway started on the same port (another address, or one that will fail to bind)
    never empties the directory of the one running. Returns None when taken, else why not — the metrics then stay in
    the process, and the gateway runs all the same: the operator set ``PROMETHEUS_MULTIPROC_DIR``, the mode was
    already chosen in this process, another gateway holds the directory, or it cannot be written."""
    import fcntl

    if os.environ.get(MULTIPROC_ENV):
        return f"{MULTIPROC_ENV} is set ({os.environ[MULTIPROC_ENV]})"
    if "prometheus_client" in sys.modules:
        return "prometheus_client was imported before the directory was prepared"
    fd = -1
    try:
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return f"another gateway on this port holds {path}"
        if path.is_dir():
            shutil.rmtree(path)
        path.mkdir(mode=0o700)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))  # who holds it (running_gateway_dirs)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)  # the lock with it: nothing of this gateway's is there
        return f"{path}: {exc.strerror or exc}"
    _held.append(fd)
    os.environ[MULTIPROC_ENV] = str(path)
    return None


def running_gateway_dirs(parent: Path) -> list[Path]:
    """The metrics directories under ``parent`` (``<state_dir>/metrics-gateways``) of gateways that run now: the
    process whose pid its lock file names is alive. A gateway that stopped, was killed or moved to another port
    leaves its directory behind (emptied at its next start on that port); its counters and its last heartbeat are
    not its machine's metrics any more. A lock file this process may not read counts as running."""
    found = []
    for d in sorted(p for p in parent.glob("*") if p.is_dir()) if parent.is_dir() else ():
        try:
            text = d.with_name(d.name + ".lock").read_text(encoding="ascii").strip()
        except PermissionError:
            found.append(d)
            continue
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit() and _alive(int(text)):
            found.append(d)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process
        return True
    return True
