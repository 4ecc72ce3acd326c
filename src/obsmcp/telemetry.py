"""structlog to stderr: readable on a terminal, JSON lines with --log-format json.

stdout is the MCP channel in stdio mode, so nothing is ever logged there.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The SDK and uvicorn log through the standard library: send it to stderr at the same level.
    logging.basicConfig(stream=sys.stderr, level=max(lvl, logging.WARNING), force=True)
    # The SDK logs every rejected tool call at INFO with the caller's text; obsmcp logs its own event.
    logging.getLogger("mcp").setLevel(logging.WARNING)
