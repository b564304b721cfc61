"""Time the report's per-domain drill-down on a synthetic scan of N domains (default one million).

    .venv/bin/python -m benchmarks.bench_report_drill [--domains 1000000] [--inline 2000]

Writes a domains table and an mx table (one MX per domain, a grade and a STARTTLS verdict drawn so that
about 8 % of domains fail) as Parquet, then times the inline selection (``_drill``) and the JSONL sidecar
of every other domain (``write_domains_sidecar``), and reports the page's inline size and the sidecar's.
No network, no scanner: only the report's DuckDB queries.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.report.build import domain_drill, write_domains_sidecar

GRADES = ("A+", "A", "B", "C", "D", "E", "F")


def _write(out: Path, n: int) -> None:
    names = [f"d{i}.example" for i in range(n)]
    grades = [GRADES[(i * 7919) % 13 % 7] if i % 11 else None for i in range(n)]
    starttls = ["all" if g in ("A+", "A", "B", "C", "D") else ("none" if g == "F" else "incomplete") for g in grades]
    (out / "domains").mkdir(parents=True)
    (out / "mx").mkdir()
    pq.write_table(pa.table({
        "scan_id": ["bench"] * n, "domain": names, "status": ["ok"] * n, "starttls": starttls, "grade": grades,
        "grade_rules": [["R1"] if g not in (None, "A+") else [] for g in grades],
    }), out / "domains" / "part-00000.parquet")
    pq.write_table(pa.table({
        "scan_id": ["bench"] * n, "domain": names, "mx_host": [f"mx{i % 5000}.provider.example" for i in range(n)],
        "mx_rank": [0] * n, "address": [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)],
        "grade": grades, "probe_status": ["starttls_ok"] * n, "host_status": ["ok"] * n,
    }), out / "mx" / "part-00000.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1_000_000)
    parser.add_argument("--inline", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scan"
        started = time.perf_counter()
        _write(out, args.domains)
        print(f"wrote {args.domains:,} domains in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        drill = domain_drill(out, (), args.inline)
        elapsed = time.perf_counter() - started
        print(f"inline selection: {len(drill.inline):,} rows of {drill.total:,} in {elapsed:.2f} s")
        started = time.perf_counter()
        path = write_domains_sidecar(out, drill, Path(tmp))
        assert path is not None
        print(f"sidecar: {drill.sidecar_rows:,} rows, {path.stat().st_size / 1e6:.0f} MB in "
              f"{time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
