"""Exactly-once: a real scan killed with SIGKILL at random points, resumed with the same command.

The final dataset must hold every input line exactly once, every MX link's probe exactly once, and the
same verdicts as an uninterrupted scan of the same world; committed probes must not be repeated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.world import BenchWorld, build
from worlds.dns import NsdServer
from worlds.smtp import SmtpFarmProcess

pytestmark = pytest.mark.slow
DOMAINS = 2500


@dataclass(frozen=True)
class Env:
    world: BenchWorld
    farm: SmtpFarmProcess


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("resume-world")
    world = build(workdir, DOMAINS, 120, second_octet=random.Random().randrange(160, 250))
    # A few junk and repeated lines, which must also come out exactly once.
    with world.domains_file.open("a", encoding="utf-8") as fh:
        fh.write("not a domain\nd1.bench.test\n\n# comment\nD2.BENCH.TEST.\n")
    nsd = NsdServer(workdir / "nsd", [world.zone_file], address=world.dns_address, port=53)
    nsd.start()
    farm = SmtpFarmProcess(world.specs, workdir / "farm")
    farm.start()
    try:
        yield Env(world, farm)
    finally:
        farm.stop()
        nsd.stop()


def command(env: Env, out: Path) -> list[str]:
    # A slow DNS rate stretches the scan over several seconds so that kills land mid-scan; frequent
    # small commits make many segments (and many chances to be killed between them).
    return [sys.executable, "-m", "scanner", "scan", str(env.world.domains_file), "-o", str(out),
            "--resolver", f"{env.world.dns_address}:53", "--ca-file", str(env.world.ca_file), "--allow-private",
            "--ehlo-name", "resume.test", "--per-ip-interval", "0", "--no-progress", "--enumerate", "off",
            "--no-policy", "--throttle-retry", "--dns-qps", "500", "--commit-interval", "0.3", "--rows-per-file", "400"]


def committed_segments(out: Path) -> int:
    try:
        return len((out / ".state" / "segments").read_text(encoding="ascii").split("\n")) - 1
    except FileNotFoundError:
        return 0


def meaningful_lines(path: Path) -> list[int]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [i for i, line in enumerate(lines, start=1) if line.strip() and not line.strip().startswith("#")]


def table(out: Path, name: str) -> list[dict[str, object]]:
    return pq.read_table(out / name).to_pylist()  # type: ignore[no-any-return]


def verdicts(out: Path) -> dict[object, tuple[object, object]]:
    return {r["input_line"]: (r["status"], r["starttls"]) for r in table(out, "domains")}




def test_killed_scans_resume_to_exactly_once(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    rng = random.Random(os.getpid())
    kills = 0
    for _ in range(4):
        before = committed_segments(out)
        process = subprocess.Popen(command(env, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random point *after* this attempt committed something (start-up time varies a lot
        # between a warm machine and a fresh one), so every kill lands in the middle of real work.
        deadline = time.monotonic() + 60
        while committed_segments(out) <= before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    final = subprocess.run(command(env, out), capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 2, "the scan finished before it could be killed: slow it down"

    domains = table(out, "domains")
    lines = Counter(r["input_line"] for r in domains)
    assert sorted(lines) == meaningful_lines(env.world.domains_file)  # every line ...
    assert max(lines.values()) == 1  # ... exactly once
    probes = table(out, "probes")
    probe_ids = Counter(r["probe_id"] for r in probes)
    assert max(probe_ids.values()) == 1  # one probe per address, never repeated in the dataset
    linked = {r["probe_id"] for r in table(out, "mx") if r["probe_id"]}
    assert linked <= set(probe_ids)  # every MX link points at a committed probe
    runs = table(out, "run")
    assert runs[-1]["completed"] and any(r["resumed_lines"] for r in runs)

    # The same verdicts as an uninterrupted scan of the same world.
    clean = tmp_path / "clean"
    assert subprocess.run(command(env, clean), capture_output=True, timeout=300, check=False).returncode == 0
    assert verdicts(out) == verdicts(clean)


def test_ctrl_c_stops_in_bounded_time_and_resumes(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    process = subprocess.Popen(command(env, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Interrupt once the scan runs (its first commit), not after a fixed sleep: on a loaded machine
    # the interpreter may still be importing after 1.5 s, and SIGINT then is a plain traceback.
    deadline = time.monotonic() + 60
    while committed_segments(out) < 1 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output[-2000:]
    assert time.monotonic() - started < 25  # stop_grace (20 s) bounds it; in practice much faster
    assert "run the same command again to resume" in " ".join(output.split())
    # The grace period is announced (it was silent for up to 20 s), with the way out.
    assert "warning: stopping: " in output and "press Ctrl-C again to abandon them" in output
    before = len(table(out, "domains"))
    assert 0 < before < len(meaningful_lines(env.world.domains_file))
    resumed = subprocess.run(command(env, out), capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0 and "resuming:" in resumed.stderr
    lines = Counter(r["input_line"] for r in table(out, "domains"))
    assert sorted(lines) == meaningful_lines(env.world.domains_file) and max(lines.values()) == 1
