"""The protocol layer does no I/O: the SMTP dialogue, the TLS codec and the enumeration planner import no
asyncio, ssl or socket (checked in a fresh interpreter, so nothing else has imported them first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["scanner.sansio", "scanner.smtp.reply", "scanner.smtp.dialogue", "scanner.tls.versions",
        "scanner.tls.messages", "scanner.tls.builder", "scanner.tls.parser", "scanner.tls.enumeration"]
IO = ("asyncio", "ssl", "socket", "selectors")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {IO!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert loaded == [], f"{module} pulls in {loaded}"
