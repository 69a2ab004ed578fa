"""Structured logs: one JSON object per line on stderr. On the message path every line carries the message id,
conversation id, service and sender → recipients; never payloads, keys or personal data."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            out["exc"] = self.formatException(record.exc_info).splitlines()[-1][:300]
        return json.dumps(out, ensure_ascii=False, default=str)


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error with the decision lines of a batch written in one go: a pipeline worker logs one decision
    line per message (logger ``hub.decision``) and calls ``flush()`` once per batch, instead of one write system
    call per line. Every other line is written at once."""

    def __init__(self) -> None:
        raw = io.FileIO(os.dup(sys.stderr.fileno()), "wb")
        super().__init__(io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8", write_through=False))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            if record.name != "hub.decision":
                self.stream.flush()
        except Exception:  # logging must never take the worker down
            self.handleError(record)


def flush() -> None:
    """Flush the root logger's handlers (a worker calls this after each batch)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def setup(level: str = "INFO", *, batched: bool = False) -> None:
    handler: logging.Handler = BatchedHandler() if batched else logging.StreamHandler(sys.stderr)
    if batched:
        # A pipeline worker writes a line per message: skip what every LogRecord would otherwise look up and the
        # JSON lines never show (thread, process, caller's file and line) — the logging HOWTO's "Optimization".
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        logging._srcfile = None  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika/aiormq are chatty at INFO about reconnects; keep warnings.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
