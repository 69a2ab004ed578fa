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

__all__ = ["MULTIPROC_ENV", "gateway_metrics_dir", "prepare_standalone"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def gateway_metrics_dir(settings: Settings, port: int) -> Path:
    """Where a gateway started on its own (``hub gateway``) and its examiner processes write their metrics:
    ``<state_dir>/metrics-gateways/<port>``, beside ``hub run``'s directory (which its supervisor empties at each
    start) and one per port (two gateways on one machine). The ops app of the machine reads these too."""
    return settings.state_dir / "metrics-gateways" / str(port)


def prepare_standalone(path: Path) -> bool:
    """``hub gateway``, before anything imported ``prometheus_client``: an empty ``path`` (the counters of an earlier
    run of this gateway are not this run's) and ``PROMETHEUS_MULTIPROC_DIR`` pointing at it, so that the ops page of
    the machine shows this gateway's metrics as it shows those of ``hub run --gateway`` (before, they stayed in the
    process, where nothing served them). False, changing nothing, when the operator set ``PROMETHEUS_MULTIPROC_DIR``
    or the mode is already chosen in this process."""
    if os.environ.get(MULTIPROC_ENV) or "prometheus_client" in sys.modules:
        return False
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return True
