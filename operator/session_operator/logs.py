"""Logging: one handler on the root logger, in text or JSON, for our lines and kopf's alike.

Text lines read like Kubernetes components' logs::

    2026-11-21T10:00:00.123Z INFO session_operator.handlers Activated session team-a/x

JSON lines are one object per line with ``time``, ``level``, ``logger``, ``message`` and,
when the record carries them, ``namespace``, ``name``, ``target`` (pass them with
``extra=logs.context(namespace=..., name=..., target=...)``) and ``exc_info``.

kopf: ``kopf.configure()`` (what the ``kopf run`` CLI calls) installs its own root handler
and formatter. We run kopf embedded and never call it; kopf's loggers (``kopf.*``) then
propagate to our root handler and share our format. Per-object kopf records
(``kopf.objects``) carry a ``k8s_ref`` extra, which we turn into ``namespace``/``name``.
Should anything have installed kopf's handler before us, ``configure`` removes it, so no
line is printed twice.

kopf and aiohttp are chatty at INFO (every handler invocation, every probe request): they
are held at WARNING unless the level is DEBUG. Note that holding ``kopf`` at WARNING also
keeps kopf from posting its per-handler INFO messages as Kubernetes Events (its event
poster hangs off the ``kopf.objects`` logger), which is what we want: our Events are one
per transition and posted by us.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Loggers that are noisy at INFO; held at WARNING unless we run at DEBUG.
CHATTY_LOGGERS = ("kopf", "aiohttp", "kubernetes_asyncio", "asyncio")
# Record attributes copied into JSON lines when present, as JSON key <- record attribute.
# ``name`` cannot be passed in ``extra`` (it is the logger's name on every LogRecord, and
# logging raises KeyError on the attempt), so the object's name travels as ``object_name``:
# use ``extra=logs.context(namespace=..., name=..., target=...)``.
CONTEXT_KEYS = (("namespace", "namespace"), ("name", "object_name"), ("target", "target"))


def context(*, namespace: str | None = None, name: str | None = None, target: str | None = None) -> dict[str, str]:
    """``extra=`` for a log call about one object: JSON lines get namespace, name, target."""
    values = {"namespace": namespace, "object_name": name, "target": target}
    return {key: value for key, value in values.items() if value}


def format_timestamp(created: float) -> str:
    """``2026-11-21T10:00:00.123Z``: UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _object_ref(record: logging.LogRecord) -> dict[str, str]:
    """kopf's per-object loggers attach ``k8s_ref`` (namespace, name, uid, ...)."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return {}
    return {key: str(ref[key]) for key in ("namespace", "name") if ref.get(key)}


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message>``; kopf object lines get a ``[ns/name]`` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        ref = _object_ref(record)
        if ref.get("name"):
            prefix = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
            message = f"[{prefix}] {message}"
        line = f"{format_timestamp(record.created)} {record.levelname} {record.name} {message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on odd extras (they are stringified)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": format_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_object_ref(record))
        for key, attribute in CONTEXT_KEYS:
            value = getattr(record, attribute, None)
            if value is not None and value != "":
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class OperatorHandler(logging.StreamHandler):
    """Our root handler; a distinct class so that re-configuring replaces it, not adds one."""


def _is_foreign_kopf_handler(handler: logging.Handler) -> bool:
    # kopf.configure() installs kopf._core.actions.loggers._KopfStreamHandler on the root.
    return type(handler).__name__ == "_KopfStreamHandler"


def configure(log_format: str = "text", level: str | int = "INFO", *, stream: TextIO | None = None) -> None:
    """Install the one root handler (idempotent) and set levels.

    ``log_format`` is ``text`` or ``json``; ``level`` a level name or number. ``stream``
    defaults to stderr (where Kubernetes collects container logs from, as from stdout).
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r} (use text or json)")
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")

    handler = OperatorHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [
        h for h in root.handlers if not isinstance(h, OperatorHandler) and not _is_foreign_kopf_handler(h)
    ]
    root.addHandler(handler)
    root.setLevel(numeric)

    for name in CHATTY_LOGGERS:
        # NOTSET at DEBUG: inherit the root's level instead of keeping an earlier WARNING.
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING)
