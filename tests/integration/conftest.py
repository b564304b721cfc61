"""Fixtures shared by the integration tests: the standard world and its scan, built once per session.

Tests that change their world (``World.set_epoch``, stopping a server) or need another one build their
own; every test scans through ``tests.integration.scanning.scan``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.scanning import STANDARD_OPTIONS, scan
from worlds.ports import pick_loopback_block
from worlds.scenario import World, standard_world


@pytest.fixture(scope="session")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The standard world (worlds/scenario.py), started once: read-only for its users."""
    with standard_world(tmp_path_factory.mktemp("world"), pick_loopback_block()) as world:
        yield world


@pytest.fixture(scope="session")
def standard_scan(standard: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of one scan of the standard world with ``STANDARD_OPTIONS``, shared by every
    test that reads it (read-only: scan elsewhere to change anything)."""
    return scan(standard, tmp_path_factory.mktemp("scan"), *STANDARD_OPTIONS).path
