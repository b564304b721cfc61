"""The package version: a leaf module, so that any layer can name it without importing the package."""

from __future__ import annotations

__version__ = "0.1.0"
