"""Log output of the command line: the standard ``logging`` module, as text or one JSON object a line.

Every module logs to ``logging.getLogger(__name__)`` (under ``scanner``); only the command line
attaches handlers, here, for the length of one command, and removes them afterwards so that a
program calling ``scanner.cli.main`` twice (the tests, a notebook) does not log everything twice.
Messages can carry text from the network (MX names, reply text): control characters are escaped in
both formats, so a log line stays one line and cannot drive a terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

__all__ = ["CONTROLS", "JsonFormatter", "TextFormatter", "command_logging", "inert", "log_level"]

# C0 and C1 controls and DEL: text from the network (a reply, a certificate or MX name) could otherwise
# move the cursor, retitle the terminal, hide text (ECMA-48) or split one log line into two.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def inert(value: object) -> str:
    """``value`` as text with every control character shown as ``\\xNN``."""
    return CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


class TextFormatter(logging.Formatter):
    """``warning: message`` (what a person reads on stderr); with a time stamp in a log file."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self._timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {inert(record.getMessage())}"
        if record.exc_info:
            text += " | " + inert(self.formatException(record.exc_info))
        if self._timestamps:
            text = f"{datetime.fromtimestamp(record.created, UTC).isoformat(timespec='milliseconds')} {text}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": inert(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = inert(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=True)


def log_level(verbose: int, quiet: int) -> int:
    """INFO by default (progress lines, resume notes); -v adds DEBUG, -q keeps warnings, -qq errors."""
    return max(logging.DEBUG, min(logging.ERROR, logging.INFO - 10 * verbose + 10 * quiet))


@contextlib.contextmanager
def command_logging(level: int, fmt: str = "text", log_file: Path | None = None,
                    stream: TextIO | None = None) -> Iterator[None]:
    """Attach the handlers of one command to the ``scanner`` logger; remove them when it ends.

    Raises ``OSError`` when the log file cannot be opened.
    """
    logger = logging.getLogger("scanner")
    console = logging.StreamHandler(stream if stream is not None else sys.stderr)
    console.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(timestamps=False))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(timestamps=True))
        handlers.append(to_file)
    previous = (logger.level, logger.propagate)
    logger.setLevel(level)
    logger.propagate = False
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous[0])
        logger.propagate = previous[1]
