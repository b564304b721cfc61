"""The demo: start the standard loopback world, scan it with the real CLI, show the dataset.

    python -m worlds.demo [--out demo-out]

Nothing leaves the machine: DNS and every mail server listen on a random 127.A.B.0/24 block.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from worlds.ports import pick_loopback_block
from worlds.scenario import SLOW_BANNER_DELAY, World, standard_world

QUERIES = {
    "Domains by STARTTLS verdict": """
        SELECT starttls AS verdict, count(*) AS domains
        FROM read_parquet('{out}/domains/*.parquet') GROUP BY 1 ORDER BY 2 DESC, 1""",
    "Domains by status": """
        SELECT status, mx_source, count(*) AS domains
        FROM read_parquet('{out}/domains/*.parquet') GROUP BY 1, 2 ORDER BY 3 DESC, 1""",
    "Probes (one per MX address)": """
        SELECT status, coalesce(failure_class, '') AS failure, coalesce(tls_version, '') AS tls,
               coalesce(cert_trust, '') AS cert, count(*) AS addresses
        FROM read_parquet('{out}/probes/*.parquet') GROUP BY ALL ORDER BY 5 DESC, 1""",
    "Grades (A+..F) and forced-TLS safety": """
        SELECT grade, count(*) AS domains, count(*) FILTER (WHERE forced_tls_safe) AS forced_tls_safe
        FROM read_parquet('{out}/domains/*.parquet') WHERE grade IS NOT NULL GROUP BY 1 ORDER BY 1""",
    "Protocol versions per address (posture enumeration)": """
        SELECT array_to_string(versions_accepted, ' ') AS versions, list_sort(weak_classes)::VARCHAR AS weak,
               count(*) AS addresses
        FROM read_parquet('{out}/probes/*.parquet') WHERE enum_mode IS NOT NULL GROUP BY ALL ORDER BY 3 DESC""",
    "MTA-STS and TLS-RPT": """
        SELECT domain, mta_sts_mode, mta_sts_unmatched_mx, mta_sts_mx_fail, tlsrpt_status, grade
        FROM read_parquet('{out}/domains/*.parquet') WHERE mta_sts_txt OR tlsrpt_status = 'valid' ORDER BY 1""",
    "Domains sharing one probe": """
        SELECT probe_id, count(DISTINCT domain) AS domains
        FROM read_parquet('{out}/mx/*.parquet') WHERE probe_id IS NOT NULL
        GROUP BY 1 HAVING count(DISTINCT domain) > 1 ORDER BY 2 DESC""",
}


def scan(world: World, out: Path) -> int:
    command = [
        sys.executable, "-m", "scanner", "scan", str(world.domains_file), "-o", str(out), "--overwrite",
        "--resolver", world.resolver, "--ca-file", str(world.ca_file), "--allow-private",
        "--ehlo-name", "demo-scanner.world.test", "--banner-timeout", str(SLOW_BANNER_DELAY / 3),
        "--per-ip-interval", "0", "--throttle-retry", "1",
    ]
    print("$ " + " ".join(command[2:]), flush=True)
    return subprocess.run(command, check=False).returncode


def show(out: Path) -> None:
    con = duckdb.connect()
    for title, sql in QUERIES.items():
        print(f"\n## {title}")
        result = con.execute(sql.format(out=out))
        header = [d[0] for d in result.description]
        rows = result.fetchall()
        widths = [max(len(str(x)) for x in [h, *[r[i] for r in rows]]) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where the dataset goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smtp-tls-world-") as tmp:
        block = pick_loopback_block()
        print(f"starting the demo world on {block}.0/24 (nsd + mail servers) ...", flush=True)
        with standard_world(Path(tmp), block) as world:
            code = scan(world, args.out.resolve())
    if code != 0:
        return code
    show(args.out.resolve())
    report = subprocess.run([sys.executable, "-m", "scanner", "report", str(args.out.resolve())], check=False)
    print(f"\nDataset: {args.out}/ (tables domains, mx, probes, sessions, run; schema in schemas/tables.md)")
    print(f"Report:  {args.out}/report/report.html (and report.md, report.json)")
    return report.returncode


if __name__ == "__main__":
    sys.exit(main())
