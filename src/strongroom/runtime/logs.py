"""The deployment's log lines: free text (default) or one JSON object a line (``--log-format json``).

``strongroom serve --log-format json`` sets ``STRONGROOM_LOG_FORMAT=json`` for
itself, its key agent and its workers; each then writes lines such as::

    {"time": "2026-12-01T10:00:00.123Z", "level": "info", "logger": "uvicorn.error",
     "message": "Application startup complete.", "pid": 4242, "request_id": "…"}

``request_id`` is present while a request is handled (:data:`REQUEST_ID`, set by
the server's request-id middleware from a well-formed ``X-Request-Id`` or a
random one, and returned in that header). A line holds only what the code chose
to log: strongroom never logs key material, shares, tokens or plaintext, and the
formatter adds nothing from the record's arguments or the environment. An
exception adds its class and traceback (code lines, no local values).

    logging.config.dictConfig(uvicorn_log_config("json", "info"))   # what serve does
    configure("json")                                               # the agent
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextvars import ContextVar
from typing import Any

__all__ = [
    "FORMATS",
    "FORMAT_ENV",
    "REQUEST_ID",
    "JsonFormatter",
    "configure",
    "log_format",
    "uvicorn_log_config",
]

#: The environment variable ``serve`` passes the format in (``text`` or ``json``).
FORMAT_ENV = "STRONGROOM_LOG_FORMAT"
FORMATS = ("text", "json")
#: The id of the request being handled in this context (None outside a request).
REQUEST_ID: ContextVar[str | None] = ContextVar("strongroom_request_id", default=None)


def log_format() -> str:
    """The configured format (``text`` unless ``STRONGROOM_LOG_FORMAT=json``)."""
    return "json" if os.environ.get(FORMAT_ENV, "text").strip().lower() == "json" else "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, pid, request_id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {"time": f"{stamp}.{int(record.msecs):03d}Z",
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage(), "pid": record.process}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def uvicorn_log_config(fmt: str, level: str) -> dict[str, Any]:
    """A ``logging.config`` dict for uvicorn (and every other logger) in ``fmt``, to stderr."""
    formatter = ({"()": f"{__name__}.JsonFormatter"} if fmt == "json"
                 else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {name: {"handlers": [], "level": level, "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
        "root": {"handlers": ["default"], "level": level},
    }


def configure(fmt: str, level: int = logging.INFO) -> None:
    """Log every record of this process to stderr in ``fmt`` (the agent's ``main``)."""
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level,
                            format="%(asctime)s agent[%(process)d] %(message)s")
