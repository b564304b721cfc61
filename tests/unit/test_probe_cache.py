"""The finished-probe cache: bounded memory, spilled summaries come back intact, keys counted once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.certs import CertificateInfo, KeyType, TrustStatus
from scanner.probe_cache import SummaryCache
from scanner.records import ProbeSummary
from scanner.status import ProbeStatus


def _summary(i: int) -> ProbeSummary:
    leaf = CertificateInfo(
        subject=f"CN=mx{i}", subject_cn=f"mx{i}", san_dns=(f"mx{i}.example",), san_ip=(), issuer="CN=ca",
        issuer_cn="ca", serial=str(i), not_before=datetime(2026, 1, 1, tzinfo=UTC),
        not_after=datetime(2027, 1, 1, tzinfo=UTC), key_type=KeyType.EC, key_bits=256,
        signature_algorithm="ecdsa-with-SHA256", sha256="00", self_issued=False,
    )
    return ProbeSummary(probe_id=f"192.0.2.{i}|25", status=ProbeStatus.STARTTLS_OK, leaf=leaf,
                        chain=(bytes([i]) * 1000,), cert_trust=TrustStatus.TRUSTED, cert_expired=False,
                        cert_self_signed=False, plaintext_after_starttls=False, enumeration=None)


def test_memory_is_bounded_and_spilled_summaries_return_equal(tmp_path: Path) -> None:
    with SummaryCache(tmp_path / "p.sqlite", capacity=3) as cache:
        for i in range(10):
            cache.put(f"k{i}", _summary(i))
        assert len(cache._memory) == 3
        assert cache.spilled == 7 and len(cache) == 10
        assert cache.get("k0") == _summary(0)  # from disk
        assert cache.reloaded == 1
        assert "k0" in cache._memory and len(cache._memory) == 3
        assert cache.get("missing") is None
        cache.put("k0", _summary(0))  # again: still one key
        assert len(cache) == 10


def test_recently_used_entries_stay_in_memory(tmp_path: Path) -> None:
    with SummaryCache(tmp_path / "p.sqlite", capacity=2) as cache:
        cache.put("hot", _summary(1))
        for i in range(5):
            assert cache.get("hot") is not None  # touched before every insertion: never the oldest
            cache.put(f"cold{i}", _summary(i))
        assert "hot" in cache._memory
        assert cache.reloaded == 0


def test_file_removed_on_close_and_capacity_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    SummaryCache(path, capacity=1).close()
    assert not path.exists()
    with pytest.raises(ValueError, match="capacity"):
        SummaryCache(path, capacity=0)
