"""Logging for programs that use etcdraft (the ``etcdraft`` command uses it too).

The library itself only logs through the standard :mod:`logging` module, under the
``etcdraft`` logger hierarchy (``etcdraft.node``, ``etcdraft.watch``, ...), and never
prints. Records carry structured fields in ``extra`` when they apply: ``node_id``,
``term``, ``index``, ``height`` and ``endpoint``.

:func:`configure` installs one handler on the root logger that writes to stderr:

* human-readable lines on a terminal::

      2025-01-01 12:00:00,123 INFO    etcdraft.node: node n1 became leader: term 42,
      height 7 [node_id=n1 term=42 height=7]        (one line)

* JSON lines otherwise (one object per record, for log shippers)::

      {"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "etcdraft.node",
       "msg": "node n1 became leader: term 42, height 7", "node_id": "n1", "term": 42,
       "height": 7}

Calling it again replaces the handler it installed before (never anyone else's).
"""

from __future__ import annotations

import json as _json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["STRUCTURED_FIELDS", "HumanFormatter", "JsonFormatter", "configure", "parse_level"]

#: ``extra`` fields that etcdraft attaches to its records, in display order.
STRUCTURED_FIELDS = ("node_id", "term", "index", "height", "endpoint")

_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def parse_level(level: str | int) -> int:
    """``"info"``, ``"DEBUG"``, ``20``... → a logging level number.

    Raises:
        ValueError: an unknown level name; the message lists the valid ones.
    """
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name.isdigit():
        return int(name)
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    return int(getattr(logging, name))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in STRUCTURED_FIELDS:
        value = record.__dict__.get(name)
        if value is not None and value != "":
            out[name] = value
    return out


class HumanFormatter(logging.Formatter):
    """``time LEVEL logger: message [field=value ...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            suffix = " ".join(f"{k}={v}" for k, v in fields.items())
            first, sep, rest = text.partition("\n")
            text = f"{first} [{suffix}]{sep}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``msg``, the structured fields present, and ``exc`` with the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(out, default=str, ensure_ascii=False)


class _EtcdraftHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`configure` installed, so a second call replaces it."""


def configure(
    level: str | int = "INFO",
    json: bool | None = None,
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send log records at ``level`` and above to ``stream`` (default: stderr).

    Args:
        level: a level name (``"debug"``, ``"INFO"``...) or number.
        json: JSON lines when True, human-readable lines when False; None picks
            human-readable on a terminal and JSON otherwise.
        stream: where to write (default ``sys.stderr``).

    Returns:
        The installed handler.

    Raises:
        ValueError: unknown level name.
    """
    number = parse_level(level)
    out = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(out, "isatty", None)
        json = not (callable(isatty) and isatty())
    handler = _EtcdraftHandler(out)
    handler.setFormatter(JsonFormatter() if json else HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _EtcdraftHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    return handler
