"""Exactly-once: a real scan killed with SIGKILL (or stopped with SIGINT) at random points, resumed.

The final dataset must hold every input line exactly once, every MX link's probe exactly once, and the
same verdicts as an uninterrupted scan of the same world; committed probes must not be repeated. It is
one scan: one scan id in every table, every link joins its probe on (scan_id, probe_id), and the run
record (run table and run.json) describes every attempt with totals equal to the tables' counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import signal
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import certifi
import cryptography
import dns.version
import pyarrow
import pyarrow.parquet as pq
import pytest

import scanner
from scanner.exit_codes import ExitCode
from tests.integration.scanning import scan_command
from worlds.bench import BenchWorld, add_sni_hosting, build
from worlds.dns import NsdServer
from worlds.ports import free_port
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
    add_sni_hosting(world, workdir, 0.1, 5)  # shared hosts: handshake-only SNI sessions must not repeat either
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


def command(env: Env, out: Path, resolver: str | None = None, source: Path | None = None) -> list[str]:
    # A slow DNS rate stretches the scan over several seconds so that kills land mid-scan; frequent
    # small commits make many segments (and many chances to be killed between them).
    return scan_command(source or env.world.domains_file, out, resolver or f"{env.world.dns_address}:53",
                        "--ca-file", str(env.world.ca_file), "--allow-private", "--ehlo-name", "resume.test",
                        "--per-ip-interval", "0", "--enumerate", "off", "--no-policy", "--throttle-retry", "--dns-qps",
                        "500", "--commit-interval", "0.3", "--rows-per-file", "400")


def committed_segments(out: Path) -> int:
    try:
        return len((out / ".state" / "segments").read_text(encoding="ascii").split("\n")) - 1
    except FileNotFoundError:
        return 0


def wait_for_commit(out: Path, process: subprocess.Popen[Any], before: int = 0) -> None:
    """Until the scan committed a segment after the ``before`` it had (or ended, or a minute passed)."""
    deadline = time.monotonic() + 60
    while committed_segments(out) <= before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def run_with_resolver(env: Env, workdir: Path, port: int, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` while a real resolver (NSD with the world's zone) answers on the world's address:``port``."""
    nsd = NsdServer(workdir, [env.world.zone_file], address=env.world.dns_address, port=port)
    nsd.start()
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    finally:
        nsd.stop()


def meaningful_lines(path: Path) -> list[int]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [i for i, line in enumerate(lines, start=1) if line.strip() and not line.strip().startswith("#")]


def table(out: Path, name: str) -> list[dict[str, object]]:
    return pq.read_table(out / name).to_pylist()  # type: ignore[no-any-return]


def verdicts(out: Path) -> dict[object, tuple[object, object, object]]:
    return {r["input_line"]: (r["status"], r["starttls"], r["certs_valid_all"]) for r in table(out, "domains")}


def assert_one_scan(out: Path, require_links: bool = True) -> list[dict[str, object]]:
    """One scan id everywhere, no link lost on (scan_id, probe_id), run totals = table counts. Returns the runs.

    ``require_links=False`` for a scan stopped early, whose committed rows may not hold a probed MX yet.
    """
    tables = {name: table(out, name) for name in ("domains", "mx", "probes", "sessions", "run")}
    ids = {r["scan_id"] for rows in tables.values() for r in rows}
    assert len(ids) == 1, ids
    probe_keys = {(r["scan_id"], r["probe_id"]) for r in tables["probes"]}
    links = [(r["scan_id"], r["probe_id"]) for r in tables["mx"] if r["probe_id"]]
    lost = [k for k in links if k not in probe_keys]
    assert (links or not require_links) and not lost, f"{len(lost)} of {len(links)} MX links lost their probe"
    runs = sorted(tables["run"], key=lambda r: int(r["attempt"]))  # type: ignore[call-overload]
    assert [r["attempt"] for r in runs] == list(range(1, len(runs) + 1))  # one row per attempt
    for name, column in (("domains", "domain_rows"), ("mx", "mx_rows"), ("probes", "probes")):
        per_attempt = Counter(r["attempt"] for r in tables[name])
        assert {r["attempt"]: r[column] for r in runs if r[column]} == dict(per_attempt), name
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["scan_id"] == ids.pop() and record["attempts_count"] == len(runs)
    assert [a["attempt"] for a in record["attempts"]] == [r["attempt"] for r in runs]
    totals = record["totals"]
    assert (totals["domain_rows"], totals["mx_rows"], totals["probes"]) == (
        len(tables["domains"]), len(tables["mx"]), len(tables["probes"]))
    return runs


def test_killed_scans_resume_to_exactly_once(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    rng = random.Random(os.getpid())
    outcomes: list[str] = []  # per attempt: the outcome its run row must say
    logs: list[Path] = []  # each attempt's stderr: the one that completes the scan prints the summary
    for i in range(4):
        before = committed_segments(out)
        logs.append(tmp_path / f"attempt-{i}.log")
        with logs[-1].open("w") as log:
            process = subprocess.Popen(command(env, out), stdout=subprocess.DEVNULL, stderr=log)
        # Stop at a random point *after* this attempt committed something (start-up time varies a lot
        # between a warm machine and a fresh one), so every stop lands in the middle of real work.
        wait_for_commit(out, process, before)
        time.sleep(rng.uniform(0.0, 1.5))
        kill = i % 2 == 0
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        process.wait(timeout=60)
        if process.returncode == 0:  # done before the signal, or a Ctrl-C that landed after the end
            outcomes.append("completed")
            break
        outcomes.append("killed" if kill else "interrupted")
    final = subprocess.run(command(env, out), capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    if outcomes[-1] == "completed":  # the last attempt above completed the scan: its log has the summary
        final_summary = logs[-1].read_text()
        assert "already holds a complete scan" in final.stderr
    else:
        final_summary = final.stderr
        outcomes.append("completed")
    assert outcomes.count("killed") >= 2 and "interrupted" in outcomes, f"too few stops landed: {outcomes}"

    domains = table(out, "domains")
    lines = Counter(r["input_line"] for r in domains)
    assert sorted(lines) == meaningful_lines(env.world.domains_file)  # every line ...
    assert max(lines.values()) == 1  # ... exactly once
    probes = table(out, "probes")
    probe_ids = Counter(r["probe_id"] for r in probes)
    assert max(probe_ids.values()) == 1  # one probe per address, never repeated in the dataset
    linked = {r["probe_id"] for r in table(out, "mx") if r["probe_id"]}
    assert linked <= set(probe_ids)  # every MX link points at a committed probe
    sessions = Counter((r["probe_id"], r["kind"], r["sni"]) for r in table(out, "sessions") if r["kind"] != "recheck")
    assert sessions and max(sessions.values()) == 1  # no-SNI and further-name sessions: never repeated either
    assert any(kind == "sni" for _, kind, _ in sessions)
    runs = assert_one_scan(out)
    assert runs[-1]["completed"] and any(r["resumed_lines"] for r in runs)
    assert [r["outcome"] for r in runs] == outcomes
    assert all(r["finished_at"] is None for r in runs if r["outcome"] == "killed")
    assert f"over {len(runs)} attempts" in " ".join(final_summary.split())  # the summary covers the whole scan

    # The same verdicts as an uninterrupted scan of the same world.
    clean = tmp_path / "clean"
    assert subprocess.run(command(env, clean), capture_output=True, timeout=300, check=False).returncode == 0
    assert verdicts(out) == verdicts(clean)


def test_ctrl_c_stops_in_bounded_time_and_resumes(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    process = subprocess.Popen(command(env, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_commit(out, process)  # mid-scan: after the first commit (start-up time varies with load)
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


def test_second_ctrl_c_ends_with_one_line_and_130(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "twice"
    process = subprocess.Popen(command(env, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_commit(out, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    # The first Ctrl-C's grace-period messages are log warnings; the command itself ends with one line.
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: stopping")]
    assert len(lines) == 1 and "second Ctrl-C" in lines[0] and "same command" in lines[0], stderr
    runs = assert_one_scan(out)
    assert [r["outcome"] for r in runs] == ["interrupted"]
    resumed = subprocess.run(command(env, out), capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["outcome"] for r in assert_one_scan(out)] == ["interrupted", "completed"]


def test_interrupted_stdin_scan_says_up_front_it_cannot_resume(env: Env, tmp_path: Path) -> None:
    cmd = command(env, tmp_path / "stdin")
    cmd[cmd.index(str(env.world.domains_file))] = "-"
    with env.world.domains_file.open("rb") as stdin:
        process = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_commit(tmp_path / "stdin", process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    first = " ".join(stderr.split("\n", 2)[0:2])
    assert "stdin" in first and "cannot be resumed" in first, stderr[:500]
    assert "run the same command again to resume" not in " ".join(stderr.split())


@pytest.mark.parametrize("dead", ["nothing_listens", "never_answers"])
def test_dead_resolver_fails_loudly_and_the_same_command_resumes(env: Env, tmp_path: Path, dead: str) -> None:
    address = env.world.dns_address
    silent: socket.socket | None = None
    if dead == "never_answers":  # a UDP socket that reads nothing and answers nothing
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((address, 0))
        port = silent.getsockname()[1]
    else:
        port = free_port(address)
    resolver = f"{address}:{port}"
    out = tmp_path / "dead"
    cmd = [*command(env, out, resolver=resolver), "--dns-timeout", "1", "--dns-tries", "1"]
    try:
        failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    finally:
        if silent is not None:
            silent.close()
    message = " ".join(failed.stderr.split())
    assert failed.returncode == ExitCode.UNAVAILABLE, message[-2000:]
    assert resolver in message and "same command" in message and "Traceback" not in message
    assert not (out / ".state" / "complete").exists()
    assert not any((out / "domains").glob("part-*.parquet"))  # failed before reading the input
    # The same command, once the resolver answers, scans everything.
    resumed = run_with_resolver(env, tmp_path / "nsd", port, cmd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(Counter(r["input_line"] for r in table(out, "domains"))) == meaningful_lines(env.world.domains_file)


def test_resolver_dying_mid_scan_stops_it_unfinished_and_resumable(env: Env, tmp_path: Path) -> None:
    address = env.world.dns_address
    port = free_port(address)
    out = tmp_path / "dies"
    cmd = [*command(env, out, resolver=f"{address}:{port}"), "--dns-failure-window", "40",
           "--dns-failure-threshold", "0.8"]
    nsd = NsdServer(tmp_path / "nsd1", [env.world.zone_file], address=address, port=port)
    nsd.start()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_commit(out, process)
    finally:
        nsd.stop()  # the resolver dies mid-scan: nothing listens there any more
    _, stderr = process.communicate(timeout=120)
    message = " ".join(stderr.split())
    assert process.returncode == ExitCode.UNAVAILABLE, message[-2000:]
    assert f"{address}:{port}" in message and "NOT complete" in message and "same command" in message
    assert not (out / ".state" / "complete").exists()
    runs = assert_one_scan(out, require_links=False)
    assert [r["outcome"] for r in runs] == ["unavailable"] and not runs[0]["completed"]
    # Rows finished while our resolver was failing were not written: no DNS failure of ours in the data.
    assert not [r for r in table(out, "domains") if r["status"] in ("dns_error", "dns_timeout", "dns_refused")]
    resumed = run_with_resolver(env, tmp_path / "nsd2", port, cmd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["outcome"] for r in assert_one_scan(out)] == ["unavailable", "completed"]
    clean = tmp_path / "clean"
    assert subprocess.run(command(env, clean), capture_output=True, timeout=300, check=False).returncode == 0
    assert verdicts(out) == verdicts(clean)


def test_provenance_is_recorded_per_attempt(env: Env, tmp_path: Path) -> None:
    source = tmp_path / "some.txt"
    source.write_text("".join(env.world.domains_file.read_text().splitlines(keepends=True)[:30]))
    other_ca = tmp_path / "ca-copy.pem"
    other_ca.write_bytes(env.world.ca_file.read_bytes() + b"\n")  # the same roots, another file
    digests = []
    for name, ca in (("a", env.world.ca_file), ("b", other_ca)):
        cmd = [*command(env, tmp_path / name, source=source), "--vantage", "lab-rack-3"]
        cmd[cmd.index("--ca-file") + 1] = str(ca)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        record = json.loads((tmp_path / name / "run.json").read_text(encoding="utf-8"))
        (attempt,) = record["attempts"]
        p = attempt["provenance"]
        row = table(tmp_path / name, "run")[0]
        assert json.loads(str(row["provenance_json"])) == p
        libs = p["libraries"]
        assert libs["python"] == platform.python_version() and libs["openssl"] == ssl.OPENSSL_VERSION
        assert (libs["cryptography"], libs["pyarrow"], libs["dnspython"],
                libs["certifi"]) == (cryptography.__version__, pyarrow.__version__, dns.version.version,
                                     certifi.__version__)
        assert libs["public_suffix_list"]["version"] == metadata.version("publicsuffixlist")
        assert p["tool"]["version"] == scanner.__version__ and p["tool"]["git_describe"]  # run from a checkout
        assert p["trust_store"] == {"path": str(ca), "source": "--ca-file",
                                    "sha256": hashlib.sha256(ca.read_bytes()).hexdigest()}
        assert p["input"] == {"path": str(source.resolve()), "lines": 30,
                              "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
        assert p["command_line"][-len(cmd) + 1:] == cmd[1:]
        assert p["host"] == socket.gethostname() and p["vantage"] == "lab-rack-3" and p["ehlo_name"] == "resume.test"
        assert attempt["config"]["probe"]["ehlo_name"] == "resume.test"
        assert attempt["result_settings"] == record["result_settings"]
        assert record["result_settings"]["probe.banner_timeout"] == 30.0
        digests.append(p["trust_store"]["sha256"])
    assert digests[0] != digests[1]


def test_resume_refusal_names_each_setting_and_ignores_neutral_ones(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "settings"
    cmd = command(env, out)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_commit(out, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    changed = [*cmd, "--banner-timeout", "7", "--enumerate", "posture"]
    refused = subprocess.run(changed, capture_output=True, text=True, timeout=120, check=False)
    message = " ".join(refused.stderr.split())
    assert refused.returncode != 0
    assert "probe.banner_timeout: 30.0 -> 7.0" in message and "probe.enumeration: 'off' -> 'posture'" in message
    # Speed and bookkeeping knobs may differ between attempts.
    neutral = [*cmd, "--concurrency", "50", "--commit-interval", "1", "--dns-workers", "64",
               "--dns-failure-window", "2000", "--summaries-in-memory", "1000"]
    resumed = subprocess.run(neutral, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["outcome"] for r in assert_one_scan(out)] == ["killed", "completed"]


def test_resume_reuses_more_committed_probes_than_fit_in_memory(env: Env, tmp_path: Path) -> None:
    """Committed probes stream into the bounded summary cache (scanner.resume.CommittedProbes): with a
    bound of one summary in memory, every probe committed before the stop is reused, none probed again."""
    out = tmp_path / "bounded"
    cmd = [*command(env, out), "--summaries-in-memory", "1"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_commit(out, process)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode == 130
    committed = {r["probe_id"] for r in table(out, "probes")}
    assert len(committed) > 1  # more than the one summary the cache keeps in memory
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(committed):,} probes already written are kept" in " ".join(resumed.stderr.split())
    probes = Counter(r["probe_id"] for r in table(out, "probes"))
    assert max(probes.values()) == 1  # none probed again
    second = {r["probe_id"] for r in table(out, "mx") if r["attempt"] == 2 and r["probe_id"]}
    assert second & committed  # the second attempt linked committed probes: reused, not re-probed
    sessions = Counter((r["probe_id"], r["kind"], r["sni"]) for r in table(out, "sessions") if r["kind"] != "recheck")
    assert max(sessions.values()) == 1
    assert [r["outcome"] for r in assert_one_scan(out)] == ["interrupted", "completed"]
