"""The package's layering, read statically from the source with ``ast`` (nothing is imported).

Every module of ``scanner/`` belongs to exactly one layer, listed below top to bottom by module name
pattern (``fnmatch``: ``scanner.report.*``). Dependencies point down: a module imports modules of its
own layer or of a layer below, never above. The judgement and protocol layer does no I/O: it imports
none of the network or event-loop libraries, and only modules of its own layer. Every import counts,
also one inside a function or under ``TYPE_CHECKING`` (a lazy import is still a dependency), and
there is no import cycle among the modules.

To classify a new module, add its name (or a pattern) to one layer; a name listed exactly wins over a
pattern.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scanner"

# Top to bottom. Patterns are matched against dotted module names; a package is its ``__init__``.
LAYERS: Mapping[str, tuple[str, ...]] = {
    # What a user runs: commands, the public API, the report over a finished dataset.
    "application": (
        "scanner", "scanner.__main__", "scanner.api", "scanner.cli", "scanner.checker", "scanner.export",
        "scanner.series", "scanner.derived", "scanner.report", "scanner.report.*", "scanner.options",
        "scanner.interrupts",
    ),
    # The scan: stages, scheduling, resume, progress.
    "engine": (
        "scanner.pipeline", "scanner.probing", "scanner.resume", "scanner.probe_cache", "scanner.seen",
        "scanner.monitor", "scanner.health", "scanner.provenance", "scanner.scan_record", "scanner.preflight",
        "scanner.cluster", "scanner.cluster.*",
    ),
    # Adapters that do I/O for the engine: network dialogues and lookups, input and output files.
    "io": (
        "scanner.dns.lookup", "scanner.dns.resolver", "scanner.dns.transport", "scanner.dns.dnssec",
        "scanner.smtp.session", "scanner.tls.probe", "scanner.policy.domain", "scanner.policy.sts_fetch",
        "scanner.policy.tlsa_lookup", "scanner.net.families", "scanner.net.limits", "scanner.net.stream",
        "scanner.input", "scanner.errors", "scanner.logs", "scanner.dataset",
        "scanner.output.parquet", "scanner.output.sink", "scanner.output.lock", "scanner.output.arrow_schema",
        "scanner.shared_lookups",
        "scanner.config",  # the default EHLO name is the host's name (socket.getfqdn)
    ),
    # Judgement and protocol: pure functions and types over bytes, text and records. No I/O.
    "judgement": (
        "scanner.verdicts", "scanner.grading", "scanner.certs", "scanner.records", "scanner.consistency",
        "scanner.sni", "scanner.status", "scanner.names", "scanner.providers",
        "scanner.exit_codes", "scanner.version", "scanner.tls", "scanner.tls.*", "scanner.smtp",
        "scanner.smtp.reply", "scanner.smtp.dialogue", "scanner.sansio", "scanner.policy", "scanner.policy.txt",
        "scanner.policy.mta_sts", "scanner.policy.tlsrpt", "scanner.policy.dane", "scanner.policy.facts",
        "scanner.policy.judge", "scanner.dns", "scanner.dns.records", "scanner.dns.wire", "scanner.net",
        "scanner.net.addresses", "scanner.output", "scanner.output.rows", "scanner.output.probe_rows",
    ),
}
PURE_LAYER = "judgement"

# Libraries a judgement module may not import: the event loop, sockets, TLS connections, the HTTP client,
# the DNS client (dnspython's, and ours: scanner.dns.resolver/transport/lookup/dnssec are in "io").
IO_LIBRARIES = frozenset({"asyncio", "aiohttp", "socket", "ssl", "selectors", "dns", "uvloop"})

@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    is_package: bool


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


MODULES = _modules()


def _imported_names(module: Module) -> Iterator[str]:
    """Every absolute module name ``module`` imports, wherever the import statement is (the packages
    Python runs on the way are ``_parents``, counted where they matter)."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:  # ``from pkg import module`` names the module, not the package
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _owner(name: str) -> str | None:
    """The scanner module a dotted name refers to (a module, or a member of one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _scanner_imports(module: Module) -> set[str]:
    owners = {_owner(name) for name in _imported_names(module) if name.split(".")[0] == "scanner"}
    return {o for o in owners if o is not None and o != module.name}


GRAPH = {name: _scanner_imports(module) for name, module in MODULES.items()}


def _layer(name: str) -> str:
    """The layer that lists ``name`` itself, else the one whose pattern matches it."""
    matches = [layer for layer, patterns in LAYERS.items() if name in patterns]
    if not matches:
        matches = [layer for layer, patterns in LAYERS.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    assert len(matches) == 1, f"{name} must be in exactly one layer, is in {matches or 'none'}: see LAYERS"
    return matches[0]


_RANK = {layer: rank for rank, layer in enumerate(LAYERS)}


def _parents(name: str) -> list[str]:
    """The packages Python runs before ``name`` (all but the root, whose imports are lazy)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _problems(name: str) -> list[tuple[str, str]]:
    """(imported, why) for each way ``name`` breaks the layering."""
    problems = []
    layer = _layer(name)
    for imported in sorted(GRAPH[name]):
        if _RANK[_layer(imported)] < _RANK[layer]:
            problems.append((imported, f"imports {imported} ({_layer(imported)}), a layer above"))
    if layer == PURE_LAYER:
        for parent in _parents(name):
            if _layer(parent) != PURE_LAYER:
                problems.append((parent, f"Python runs package {parent} ({_layer(parent)}) first"))
        libraries = {n.split(".")[0] for n in _imported_names(MODULES[name])} & IO_LIBRARIES
        problems.extend((library, f"imports {library}") for library in sorted(libraries))
    return problems


def test_every_module_is_in_exactly_one_layer() -> None:
    for name in MODULES:
        _layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_dependencies_point_down(name: str) -> None:
    problems = [why for _, why in _problems(name)]
    assert not problems, f"{name}: " + "; ".join(problems)


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a cycle through a TYPE_CHECKING import, as probing <-> probe_cache was."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({**GRAPH, "scanner.status": {*GRAPH["scanner.status"], "scanner.probing"}})
