"""Checks before the input is read fail with their documented exit code, before any packet is sent."""

from __future__ import annotations

from pathlib import Path

from scanner.cli import main
from scanner.exit_codes import ExitCode


def _scan(tmp_path: Path, *extra: str, out: Path | None = None) -> int:
    domains = tmp_path / "domains.txt"
    domains.write_text("example.org\n", encoding="utf-8")
    # The resolver is never asked: each check below fails before the resolver check.
    return main(["scan", str(domains), "-o", str(out or tmp_path / "out"), "--resolver", "127.0.0.1:9",
                 "--no-progress", "--ehlo-name", "scanner.example.org", *extra])


def test_unusable_trust_store_is_a_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n", encoding="utf-8")
    assert _scan(tmp_path, "--ca-file", str(bad)) == ExitCode.CONFIG
    assert not (tmp_path / "out").exists()


def test_output_that_cannot_be_created_is_cant_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    assert _scan(tmp_path, out=blocker / "out") == ExitCode.CANT_CREATE
