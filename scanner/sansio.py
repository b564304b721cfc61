"""The one "need more data" answer of every sans-IO parser in the scanner (model: python-hyper/h11).

The SMTP reply framing (``scanner.smtp.reply``), the SMTP dialogue (``scanner.smtp.dialogue``) and the TLS
server-response parser (``scanner.tls.parser``) return ``NEED_DATA`` when they cannot answer from the
bytes fed so far: not an error, not an event; feed more bytes (or the end of the stream) and ask again.
A leaf module, importing nothing.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

__all__ = ["NEED_DATA", "NeedData"]


class NeedData(Enum):
    NEED_DATA = "need_data"


NEED_DATA: Final = NeedData.NEED_DATA
