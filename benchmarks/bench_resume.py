"""Peak memory of loading a scan's resume state: the committed probes reused by the next attempt.

    python -m benchmarks.bench_resume [--probes 200000] [--capacity 25000]

Writes a synthetic committed scan of ``--probes`` probe rows (every third a STARTTLS success with a
two-certificate chain, like a survey's mix) with the scanner's own writer, then, in a fresh child
process, loads the resume state (``scanner.resume.load_resume_state``) and seeds a summary cache of
``--capacity`` summaries in memory (``scanner.probe_cache.SummaryCache``, the rest in SQLite), as a
resumed scan does. Prints the child's peak RSS after imports and after the load, and the time taken.
No network.

To compare with another version of the scanner, keep a dataset with ``--keep DIR`` and run the child
against the other checkout's ``scanner`` from a directory outside both (the current directory comes
first on ``sys.path``): ``PYTHONPATH=OTHER:THIS python -m benchmarks.bench_resume --child DIR``. The child
works with either form of ``ResumeState.probes``: a dict of every summary (before issue 13) or the
stream of ``CommittedProbes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

_STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def _write_dataset(out: Path, probes: int) -> Path:
    """A committed scan of ``probes`` probe rows; returns the CA file that trusts their chains."""
    from scanner.output.parquet import DatasetWriter
    from scanner.probing import build_probe_row
    from scanner.scan_record import Attempt, ScanRecord
    from scanner.smtp.session import skipped_result
    from scanner.status import AttemptOutcome, FailureClass, ProbeStatus

    ca = trustme.CA()
    chains = [[ssl.PEM_cert_to_DER_cert(c.bytes().decode()) for c in ca.issue_cert(f"mx{i}.bench").cert_chain_pems]
              for i in range(64)]
    writer = DatasetWriter(out, segment_rows=50_000, row_group_size=5_000)
    failed = skipped_result(FailureClass.INTERNAL, "synthetic")
    batch = []
    for i in range(probes):
        row = build_probe_row("bench", 1, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 25, (f"mx{i}.bench",),
                              failed, None, _STARTED)
        if i % 3 == 0:
            row = dataclasses.replace(row, status=ProbeStatus.STARTTLS_OK, cert_chain=chains[i % 64],
                                      cert_trust="trusted", cert_expired=False, cert_not_yet_valid=False,
                                      cert_self_signed=False, sni=f"mx{i}.bench")
        batch.append(row)
        if len(batch) == 1000:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    attempt = Attempt(attempt=1, started_at=_STARTED, finished_at=_STARTED + timedelta(hours=1),
                      outcome=AttemptOutcome.INTERRUPTED, message="", config={}, result_settings={}, provenance={})
    ScanRecord("bench", [attempt]).save(out)
    ca_file = out.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (out.parent / "in.txt").write_text("example.org\n", encoding="utf-8")
    return ca_file


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(base: Path, capacity: int) -> None:
    """Load the resume state of ``base/out`` and seed a bounded cache; print figures as JSON."""
    from scanner.certs import TrustStore
    from scanner.config import OutputConfig, ProbeConfig, ScanConfig
    from scanner.probe_cache import SummaryCache
    from scanner.resume import load_resume_state

    out = base / "out"
    config = ScanConfig(OutputConfig(out), probe=ProbeConfig(summaries_in_memory=capacity))
    trust = TrustStore.from_pem_file(base / "ca.pem")
    imported = _peak_mib()
    started = time.perf_counter()
    state = load_resume_state(out, config, base / "in.txt", trust)
    with SummaryCache(out / ".work" / "probes.sqlite", capacity) as cache:
        probes = state.probes
        pairs = probes.items() if isinstance(probes, dict) else probes.summaries(cache.get)
        for key, summary in pairs:
            cache.put(key, summary)
        print(json.dumps({"imported_mib": round(imported, 1), "peak_mib": round(_peak_mib(), 1),
                          "seconds": round(time.perf_counter() - started, 1), "summaries": len(cache),
                          "spilled": cache.spilled}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=200_000)
    parser.add_argument("--capacity", type=int, default=25_000, help="summaries in memory (--summaries-in-memory)")
    parser.add_argument("--keep", type=Path, help="write the dataset here and keep it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.capacity)
        return
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        base = args.keep or Path(tmp)
        started = time.perf_counter()
        _write_dataset(base / "out", args.probes)
        print(f"dataset: {args.probes:,} probe rows written in {time.perf_counter() - started:.1f} s")
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_resume", "--child", str(base),
                               "--capacity", str(args.capacity)], capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout)
        print(f"resume state: peak RSS {figures['peak_mib']} MiB ({figures['imported_mib']} MiB after imports), "
              f"{figures['seconds']} s; {figures['summaries']:,} summaries, {figures['spilled']:,} spilled to disk "
              f"(capacity {args.capacity:,})")


if __name__ == "__main__":
    main()
