"""The drill-down table's markup and script (the browser behaviour is tested in tests/integration)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from scanner.report.drill import DRILL_SCRIPT, drill_table, script_csp_source


def test_cells_are_escaped_and_sidecar_offered() -> None:
    html = drill_table("t", "cap", ["domain"], [["<b>x</b>.example"]], sidecar="side.jsonl", columns=["domain"])
    assert "&lt;b&gt;x&lt;/b&gt;.example" in html and "<b>x" not in html
    assert 'class="drill-sidecar"' in html and 'data-columns="domain"' in html


def test_csp_hash_is_the_scripts() -> None:
    digest = base64.b64encode(hashlib.sha256(DRILL_SCRIPT.encode()).digest()).decode()
    assert script_csp_source() == f"'sha256-{digest}'"


@pytest.mark.skipif(shutil.which("node") is None, reason="node checks the script's syntax")
def test_script_is_valid_javascript(tmp_path: Path) -> None:
    path = tmp_path / "drill.js"
    path.write_text(DRILL_SCRIPT, encoding="utf-8")
    result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
