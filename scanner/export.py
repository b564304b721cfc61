"""Export a scan's tables as JSON Lines or CSV, and read the JSON Lines back (``smtp-tls-survey export``).

One file per table (``domains.jsonl``, ``mx.csv``, ...), streamed part file by part file and batch by
batch, so a million-domain scan exports in constant memory. Encodings, the same in both formats:

* timestamps: ISO 8601 with offset (``2026-12-04T17:20:01.123456+00:00``);
* certificates (``probes.cert_chain``, DER): base64 strings, or PEM text (``--certs pem``, RFC 7468 §2);
* in CSV, list columns are JSON arrays (``["mx1.example","mx2.example"]``) and null is an empty cell;
  in JSON Lines, lists are arrays and null is ``null``.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scanner.dataset import load
from scanner.output.arrow_schema import arrow_schema
from scanner.output.rows import TABLES

__all__ = ["CertEncoding", "ExportError", "ExportFormat", "export_dataset", "read_jsonl"]

_BATCH_ROWS: Final = 10_000


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class CertEncoding(StrEnum):
    BASE64 = "base64"  # of the DER bytes
    PEM = "pem"


class ExportError(ValueError):
    """Unknown table, or a destination that cannot be written."""


@dataclass(frozen=True, slots=True)
class _Codec:
    certs: CertEncoding

    def encode(self, value: Any, field: pa.Field) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, bytes):
            if self.certs is CertEncoding.PEM:
                return x509.load_der_x509_certificate(value).public_bytes(Encoding.PEM).decode("ascii")
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, list):
            return [self.encode(v, field) for v in value]
        return value

    def decode(self, value: Any, dtype: pa.DataType) -> Any:
        if value is None:
            return None
        if pa.types.is_timestamp(dtype):
            return datetime.fromisoformat(value)
        if pa.types.is_binary(dtype):
            if self.certs is CertEncoding.PEM:
                return x509.load_pem_x509_certificate(value.encode("ascii")).public_bytes(Encoding.DER)
            return base64.b64decode(value)
        if pa.types.is_list(dtype):
            return [self.decode(v, dtype.value_type) for v in value]
        return value


def _records(out_dir: Path, table: str, codec: _Codec) -> Iterator[dict[str, Any]]:
    schema = arrow_schema(TABLES[table])
    for path in load(out_dir).files(table):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
            # Cast to the declared schema: an older part lacking a column reads it as null.
            data = pa.Table.from_batches([batch])
            for name in schema.names:
                if name not in data.column_names:
                    data = data.append_column(name, pa.nulls(data.num_rows, schema.field(name).type))
            data = data.select(schema.names).cast(schema)
            for row in data.to_pylist():
                yield {k: codec.encode(v, schema.field(k)) for k, v in row.items()}


def _write_jsonl(stream: IO[str], records: Iterator[Mapping[str, Any]]) -> int:
    n = 0
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n


def _csv_cell(value: Any) -> Any:
    """Null → empty cell; a list → its JSON array; booleans as JSON spells them (true / false)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_csv(stream: IO[str], names: Sequence[str], records: Iterator[Mapping[str, Any]]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(names)
    n = 0
    for record in records:
        writer.writerow([_csv_cell(record[k]) for k in names])
        n += 1
    return n


def export_dataset(
    out_dir: Path, dest: Path, fmt: ExportFormat, tables: Sequence[str] = (), certs: CertEncoding = CertEncoding.BASE64,
) -> dict[str, int]:
    """Write one ``<table>.<fmt>`` file per table into ``dest``; returns the rows written per table."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ExportError(f"unknown table(s) {', '.join(unknown)}; tables are {', '.join(TABLES)}")
    dest.mkdir(parents=True, exist_ok=True)
    codec = _Codec(certs)
    written = {}
    for table in tables or list(TABLES):
        path = dest / f"{table}.{fmt.value}"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as stream:
            records = _records(out_dir, table, codec)
            written[table] = (_write_jsonl(stream, records) if fmt is ExportFormat.JSONL
                              else _write_csv(stream, arrow_schema(TABLES[table]).names, records))
        tmp.replace(path)
    return written


def read_jsonl(path: Path, table: str, certs: CertEncoding = CertEncoding.BASE64) -> pa.Table:
    """A ``<table>.jsonl`` export read back into an Arrow table with the declared schema."""
    schema = arrow_schema(TABLES[table])
    codec = _Codec(certs)
    rows = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            record = json.loads(line)
            rows.append({f.name: codec.decode(record.get(f.name), f.type) for f in schema})
    return pa.Table.from_pylist(rows, schema=schema)
