"""Command-line options derived from the config dataclasses: one source of truth per setting.

A config field that a user can set carries an ``Option`` in its metadata (``scanner.config.option``):
the flag, the help line and, where needed, a metavar or the closed set of choices. From it this module
adds the argparse option (type, default, action taken from the field itself), builds the dataclass back
from the parsed arguments, and names the flag of a setting in error messages. A default is written only
once, on the field; a command that needs another default (``check``'s per-address interval) says so in
one mapping. A field whose option a command does not offer keeps the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from scanner.config import DnsConfig, HealthConfig, Option, OutputConfig, ProbeConfig, SafetyConfig, ScanConfig

__all__ = ["SECTIONS", "add_options", "build", "dest", "setting_flags"]

_C = TypeVar("_C")

# Each section of ScanConfig and its dataclass, in the order of ``ScanConfig``'s fields.
SECTIONS: Mapping[str, type] = {"output": OutputConfig, "dns": DnsConfig, "probe": ProbeConfig,
                                "safety": SafetyConfig, "health": HealthConfig}


def _option(f: dataclasses.Field[Any]) -> Option | None:
    found = f.metadata.get("option")
    return found if isinstance(found, Option) else None


def dest(flag: str) -> str:
    """argparse's attribute name for a flag (``--per-ip-interval`` → ``per_ip_interval``)."""
    return flag.lstrip("-").replace("-", "_")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return None  # a computed default (default_factory): the help line says what it is


def _negated(option: Option, kind: Any) -> bool:
    """``--no-policy`` sets ``policy_checks`` false: a boolean field whose flag says no."""
    return kind is bool and option.flag.startswith("--no-")


def add_options(group: argparse._ActionsContainer, cls: type, only: Collection[str] | None = None,
                skip: Collection[str] = (), defaults: Mapping[str, Any] | None = None) -> None:
    """Add the options of ``cls``'s fields (``only`` those, if given; not those in ``skip``) to ``group``.

    ``defaults`` replaces a field's default for this command (field name → value).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        option = _option(f)
        if option is None or option.follows or f.name in skip or (only is not None and f.name not in only):
            continue
        kind = hints[f.name]
        default = (defaults or {}).get(f.name, _default(f))
        kwargs: dict[str, Any] = {"help": option.help}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.choices:
            kwargs["choices"] = option.choices
        if kind is bool:
            kwargs["action"] = "store_true"  # the flag turns the field's default around
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            if item is str:
                kwargs.update(action="append", default=list(default))  # repeatable (--resolver A --resolver B)
            else:
                kwargs.update(type=item, nargs="*", default=list(default))  # --throttle-retry 10 60
        else:
            kwargs.update(type=_scalar(kind), default=default)
        group.add_argument(option.flag, **kwargs)


def _scalar(kind: Any) -> Any:
    """The argparse ``type`` of a field: ``Path | None`` is a Path, ``int`` an int."""
    inner = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
    return Path if Path in inner else inner[0]


def build(cls: type[_C], args: argparse.Namespace, **fixed: Any) -> _C:
    """The dataclass from the parsed options, ``fixed`` values overriding; nested sections built alike.

    A field without an option in this command (absent from ``args``) keeps its dataclass default.
    """
    hints = typing.get_type_hints(cls)
    given = vars(args)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in fixed:
            continue
        kind = hints[f.name]
        option = _option(f)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[f.name] = build(kind, args)
        elif option is not None and option.follows:
            continue  # set below, from the field it follows
        elif option is not None and dest(option.flag) in given:
            value = given[dest(option.flag)]
            if value is None:
                continue  # a computed default (default_factory): not given, so computed
            if _negated(option, kind):
                value = not value
            elif typing.get_origin(kind) is tuple:
                value = tuple(value)
            kwargs[f.name] = value
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        option = _option(f)
        if option is not None and option.follows and f.name not in fixed and option.follows in kwargs:
            kwargs[f.name] = kwargs[option.follows]
    return cls(**kwargs, **fixed)


def setting_flags() -> dict[str, str]:
    """Config setting (``ConfigError.setting``, ``probe.max_connections``) → the flag that sets it."""
    out: dict[str, str] = {}
    for prefix, cls in (("", ScanConfig), *((f"{name}.", c) for name, c in SECTIONS.items())):
        by_name = {f.name: _option(f) for f in dataclasses.fields(cls)}
        for name, option in by_name.items():
            if option is None:
                continue
            source = by_name.get(option.follows) if option.follows else option
            if source is not None:
                out[f"{prefix}{name}"] = source.flag
    return out
