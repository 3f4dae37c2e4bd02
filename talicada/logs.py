"""structlog set-up: one format on stderr for our events and every library's records.

Our events go through structlog; the records of aiohttp (including its access
log), asyncio and redis go through the standard library, and both are rendered
by one :class:`structlog.stdlib.ProcessorFormatter`: JSON lines in production,
a readable console in a terminal. Context bound with
``structlog.contextvars.bound_contextvars`` (the session and event a consumer
handles, the request the HTTP middleware serves) is merged into every line,
whichever logger wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import Final, TextIO

import msgspec
import structlog

#: Standard-library loggers and the least level of theirs that is written.
LIBRARY_LEVELS: Final = {
    # One line per HTTP request served (the access log).
    "aiohttp.access": logging.INFO,
    "aiohttp": logging.WARNING,
    "asyncio": logging.WARNING,
    "redis": logging.WARNING,
}

#: msgspec writes a log line several times faster than ``json.dumps``; what it
#: cannot encode is written as its ``repr``, as structlog's default does.
_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: object, **_: object) -> str:
    return _ENCODER.encode(event).decode()


#: Applied to our events and to library records alike, before rendering.
SHARED: Final[list[structlog.typing.Processor]] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

_HANDLER_NAME: Final = "talicada"


def configure(
    fmt: str = "auto",
    level: int = logging.INFO,
    *,
    stream: TextIO | None = None,
    cache: bool = True,
) -> bool:
    """Configure structlog and stdlib logging for the process (again replaces the set-up).

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when the stream is a TTY).
    ``stream`` defaults to stderr; ``cache=False`` lets a test configure twice.
    Returns True when lines are JSON.
    """
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_json_line)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=cache,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*SHARED, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, least in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(least, level))
    return not console


def reset() -> None:
    """Undo :func:`configure` (tests): structlog's defaults, no handler of ours."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()
