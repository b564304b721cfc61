"""Bad input at scale: mix every kind of junk a real domain list holds into a benchmark's input file.

The scanner must account for every line (a row per line: scanned, duplicate, invalid or excluded; or
counted as blank/comment), never crash, never stall. ``add_junk`` rewrites the file with junk lines
interleaved at random positions and returns what it added, so the benchmark can check the dataset
against the file.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

__all__ = ["JUNK_KINDS", "add_junk", "physical_lines"]


def _garbage(rng: random.Random, _: list[str]) -> bytes:
    return "".join(rng.choice("!#$%&*()+=[]{}<>?;:'\"`~|\\") for _ in range(rng.randint(1, 30))).encode()


def _overlong_name(rng: random.Random, _: list[str]) -> bytes:
    return (".".join("a" * 60 for _ in range(5)) + ".example").encode()  # > 253 characters


def _overlong_label(rng: random.Random, _: list[str]) -> bytes:
    return ("b" * 64 + ".example").encode()


def _overlong_line(rng: random.Random, _: list[str]) -> bytes:
    return b"x" * rng.randint(5_000, 50_000)  # beyond the reader's 4 KiB line cap


def _idn(rng: random.Random, names: list[str]) -> bytes:
    return f"bücher-{rng.randrange(10**6)}.bench.test".encode()  # valid IDN: scanned as xn--, NXDOMAIN


def _confusable(rng: random.Random, names: list[str]) -> bytes:
    # Cyrillic а (U+0430) in a Latin-looking name: a valid IDN label, kept as its A-label.
    return f"pаypal-{rng.randrange(10**6)}.bench.test".encode()


def _bad_idn(rng: random.Random, _: list[str]) -> bytes:
    return "☃\u200d.example".encode()  # a zero-width joiner where IDNA 2008 forbids it


def _blank(rng: random.Random, _: list[str]) -> bytes:
    return rng.choice([b"", b"   ", b"\t"])


def _comment(rng: random.Random, _: list[str]) -> bytes:
    return b"# a comment line"


def _binary(rng: random.Random, _: list[str]) -> bytes:
    return bytes(rng.choice([*range(0, 10), *range(11, 256)]) for _ in range(rng.randint(1, 80)))


def _url_or_address(rng: random.Random, names: list[str]) -> bytes:
    name = rng.choice(names)
    return rng.choice([f"https://{name}/", f"postmaster@{name}", f"{name} extra words"]).encode()


def _ip_literal(rng: random.Random, _: list[str]) -> bytes:
    return f"192.0.2.{rng.randrange(256)}".encode()


def _duplicate_variant(rng: random.Random, names: list[str]) -> bytes:
    name = rng.choice(names)
    return rng.choice([name.upper() + ".", f"  {name}  ", f"{rng.randrange(1, 10**6)},{name}"]).encode()


JUNK_KINDS = {
    "garbage": _garbage, "overlong_name": _overlong_name, "overlong_label": _overlong_label,
    "overlong_line": _overlong_line, "idn": _idn, "confusable": _confusable, "bad_idn": _bad_idn,
    "blank": _blank, "comment": _comment, "binary": _binary, "url_or_address": _url_or_address,
    "ip_literal": _ip_literal, "duplicate_variant": _duplicate_variant,
}


def add_junk(path: Path, share: float, seed: int = 11) -> Counter[str]:
    """Interleave ``share`` (of the file's lines) junk lines, a BOM first, CRLF on some lines."""
    rng = random.Random(seed)
    names = path.read_text(encoding="utf-8").split()
    kinds = list(JUNK_KINDS)
    added: Counter[str] = Counter()
    with path.open("wb") as out:
        out.write(b"\xef\xbb\xbf")  # a UTF-8 BOM, as spreadsheet exports write
        for name in names:
            while rng.random() < share:
                kind = rng.choice(kinds)
                line = JUNK_KINDS[kind](rng, names)
                out.write(line + (b"\r\n" if rng.random() < 0.5 else b"\n"))
                added[kind] += 1
            out.write(name.encode() + (b"\r\n" if rng.random() < 0.1 else b"\n"))
    return added


def physical_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
