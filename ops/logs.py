"""Logging: structlog, JSON lines in production (``log_format="json"``), readable console lines otherwise.

Library loggers (faust, mode, aiokafka, paho) go through the same stdlib handler, so every line of a
worker has the same format. Console lines are coloured only when stderr is a terminal and ``NO_COLOR`` is not
set (https://no-color.org); a log file or pipe never gets escape codes. A client's malformed HTTP request (aiohttp's
4xx parser errors) is one info line with the reason, not an error with a traceback.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour escape codes only for a terminal, and never when ``NO_COLOR`` is set (to anything non-empty)."""
    stream = stream if stream is not None else sys.stderr
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class ClientErrorFilter(logging.Filter):
    """Turn aiohttp's "Error handling request" for a client's 4xx (a malformed request) into one info line.

    aiohttp logs every HTTP parser error (bad header, bad request line) with a traceback at error level; those
    are the client's mistakes, answered 400: the line keeps the reason and drops the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)
        if (
            exc is not None
            and isinstance(code, int)
            and 400 <= code < 500
            and type(exc).__module__.startswith("aiohttp")
        ):
            message = getattr(exc, "message", None) or str(exc)
            record.msg = f"{record.getMessage()}: client error {code}: {' '.join(str(message).split())[:300]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def logging_dict_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` routing stdlib logs through structlog's formatter."""
    colours = use_colour()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=colours,
            # tracebacks without locals: a local can be a whole road network; plain text unless on a terminal
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            if colours
            else structlog.dev.plain_traceback,
        )
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                "foreign_pre_chain": _SHARED,
            }
        },
        "filters": {"client_errors": {"()": ClientErrorFilter}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structlog", "filters": ["client_errors"]}
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "amqtt": {"level": "WARNING"},
            "transitions": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure stdlib logging and structlog once for this process."""
    logging.config.dictConfig(logging_dict_config(level, fmt))
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
