"""smtp-tls-survey: measure how well the Internet's inbound mail servers do TLS."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
