"""Logging: structlog, JSON lines in production (``log_format="json"``), readable console lines otherwise.

Library loggers (faust, mode, aiokafka, paho) go through the same stdlib handler, so every line of a
worker has the same format.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_dict_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` routing stdlib logs through structlog's formatter."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False,  # tracebacks without locals: a local can be a whole road network
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
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
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structlog"}},
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
