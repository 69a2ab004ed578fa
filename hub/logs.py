"""Structured logs: one JSON object per line on stderr. On the message path every line carries the message id,
conversation id, service and sender → recipients; never payloads, keys or personal data."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
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

    def write_lines(self, text: str) -> None:
        """Buffer already formatted lines (written at the next ``flush()``)."""
        self.acquire()
        try:
            self.stream.write(text)
        except Exception:  # logging must never take the worker down
            self.handleError(logging.makeLogRecord({"msg": "decision lines", "levelno": logging.INFO}))
        finally:
            self.release()


#: What JsonFormatter's ``json.dumps(out, ensure_ascii=False, default=str)`` builds on every call, built once.
_encode_line = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _batched_target(logger: logging.Logger) -> BatchedHandler | None:
    """The batched handler that alone takes ``logger``'s records (no handler or filter of its own or of a parent
    on the way, one root handler, formatted by JsonFormatter), else None."""
    if logger.filters:
        return None
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # up to, not including, the root
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    root = logging.getLogger()
    if len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if (
        type(handler) is not BatchedHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


def log_decisions(logger: logging.Logger, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Log one INFO line per ``(msg, extra)`` — a batch's decision lines. Under a worker's batched JSON handler the
    lines are the text ``JsonFormatter`` writes, made without a ``LogRecord`` each and stamped once per batch (they
    are logged at the same moment); anywhere else (tests, other handlers) each goes through ``logger.info``."""
    if not items or not logger.isEnabledFor(logging.INFO):
        return
    target = _batched_target(logger)
    if target is None:
        for msg, extra in items:
            logger.info(msg, extra=extra)
        return
    head = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": "info", "logger": logger.name}
    encode = _encode_line
    target.write_lines("".join([encode({**head, "msg": msg, **extra}) + "\n" for msg, extra in items]))


def flush() -> None:
    """Flush the root logger's handlers (a worker calls this after each batch). A stream that cannot be written
    (closed, or a broken pipe) loses its lines, never the batch: logging must not stop the message path."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except (OSError, ValueError):
            pass


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
