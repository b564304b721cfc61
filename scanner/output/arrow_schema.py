"""Derive the Arrow schema and the schema documentation from the row dataclasses (never by hand)."""

from __future__ import annotations

import dataclasses
import enum
import json
import operator
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa

from scanner.output.rows import SCHEMA_VERSION, TABLES

__all__ = ["ColumnBuilder", "arrow_schema", "closed_sets", "enum_values", "render_json", "render_markdown"]

_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _arrow_type(annotation: Any) -> pa.DataType:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return pa.string()  # stored as the enum's stable value; Parquet dictionary-encodes it
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return pa.list_(_arrow_type(item))
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no Arrow mapping for {annotation!r}")


def _fields(row_class: type) -> list[tuple[dataclasses.Field[Any], Any, bool]]:
    hints = typing.get_type_hints(row_class)
    out = []
    for f in dataclasses.fields(row_class):
        inner, nullable = _unwrap_optional(hints[f.name])
        out.append((f, inner, nullable))
    return out


def arrow_schema(row_class: type) -> pa.Schema:
    fields = [
        pa.field(f.name, _arrow_type(inner), nullable=nullable, metadata={"doc": f.metadata.get("doc", "")})
        for f, inner, nullable in _fields(row_class)
    ]
    return pa.schema(fields, metadata={"schema_version": SCHEMA_VERSION, "table": row_class.__name__})


class ColumnBuilder:
    """Turns a batch of row objects of one class into an Arrow table, column by column.

    Column-wise conversion (one list per column, enums mapped to their values once per column) costs a
    fraction of building a dict per row and letting Arrow re-read the dicts.
    """

    def __init__(self, row_class: type) -> None:
        self.schema = arrow_schema(row_class)
        self._columns = [(f.name, _closed_set(inner)) for f, inner, _ in _fields(row_class)]
        names = [name for name, _ in self._columns]
        # One C call reads a row's every field into a tuple, and zip(*) turns the tuples into columns:
        # a getattr per field per row in Python cost ~4% of a scan's CPU. (One field: no tuple.)
        getter = operator.attrgetter(*names)
        self._row_values: Callable[[Any], tuple[Any, ...]] = \
            getter if len(names) > 1 else (lambda row: (getter(row),))

    def table(self, rows: list[Any]) -> pa.Table:
        data: dict[str, list[Any]] = {}
        columns = zip(*map(self._row_values, rows), strict=True) if rows else iter([()] * len(self._columns))
        for (name, closed), column in zip(self._columns, columns, strict=True):
            values = list(column)
            if closed is not None:
                values = _member_values(name, *closed, values)
            data[name] = values
        return pa.Table.from_pydict(data, schema=self.schema)


def _closed_set(annotation: Any) -> tuple[type[enum.Enum], bool] | None:
    """The enum of a closed-set column, and whether the column is a list of its members."""
    is_list = typing.get_origin(annotation) is list
    inner = typing.get_args(annotation)[0] if is_list else annotation
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return inner, is_list
    return None


def _member_values(column: str, cls: type[enum.Enum], is_list: bool, values: list[Any]) -> list[Any]:
    """The values to write for a closed-set column, after checking that each is a member of its enum.

    The class is checked, not only the value: a plain string (or another enum's member) in a closed-set
    column is a producer bug that would let the column drift from its value set unseen.
    """
    members = [m for v in values if v for m in v] if is_list else values
    strays = set(map(type, members)) - {cls, type(None)}
    if strays:
        stray = next(m for m in members if type(m) in strays)
        raise TypeError(f"column {column}: {stray!r} is not a {cls.__name__} member")
    if issubclass(cls, str):
        return values  # a str-valued member is its value to Arrow: no per-value conversion
    if is_list:
        return [None if v is None else [m.value for m in v] for v in values]
    return [None if v is None else v.value for v in values]


def closed_sets(row_class: type) -> dict[str, type[enum.Enum]]:
    """Column name → the enum its values (or its list's items) come from, for every closed-set column."""
    out = {}
    for f, inner, _ in _fields(row_class):
        if (closed := _closed_set(inner)) is not None:
            out[f.name] = closed[0]
    return out


def enum_values(annotation: Any) -> list[str] | None:
    """The allowed values of a closed-set column (an enum, or a list of one), in the enum's order."""
    inner, _ = _unwrap_optional(annotation)
    closed = _closed_set(inner)
    if closed is None:
        return None
    return [str(member.value) for member in closed[0]]


def render_json() -> str:
    """Machine-readable schema of every table (committed as schemas/schema.json)."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "tables": {}}
    for table, row_class in TABLES.items():
        hints = typing.get_type_hints(row_class)
        columns = []
        for f, inner, nullable in _fields(row_class):
            column: dict[str, Any] = {
                "name": f.name,
                "type": str(_arrow_type(inner)),
                "nullable": nullable,
                "doc": f.metadata.get("doc", ""),
            }
            values = enum_values(hints[f.name])
            if values is not None:
                column["values"] = values
            columns.append(column)
        doc["tables"][table] = {"doc": (row_class.__doc__ or "").strip(), "columns": columns}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_markdown() -> str:
    """Human-readable schema (committed as schemas/tables.md)."""
    lines = [
        "# Output tables",
        "",
        f"Generated from `scanner/output/rows.py` (schema version {SCHEMA_VERSION}); "
        "regenerate with `python -m scanner.output.arrow_schema`. Do not edit by hand.",
        "",
    ]
    for table, row_class in TABLES.items():
        hints = typing.get_type_hints(row_class)
        lines += [f"## `{table}`", "", (row_class.__doc__ or "").strip(), "",
                  "| column | type | null | description |", "|---|---|---|---|"]
        for f, inner, nullable in _fields(row_class):
            desc = f.metadata.get("doc", "")
            values = enum_values(hints[f.name])
            if values is not None:
                desc += " Values: " + ", ".join(f"`{v}`" for v in values) + "."
            lines.append(f"| `{f.name}` | {_arrow_type(inner)} | {'yes' if nullable else 'no'} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parents[2] / "schemas"
    (target / "schema.json").write_text(render_json(), encoding="utf-8")
    (target / "tables.md").write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {target}/schema.json and tables.md")
