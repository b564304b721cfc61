"""The resolver drives c-ares from the event loop, never from pycares' helper thread (see resolver.py)."""

from __future__ import annotations

from scanner.config import DnsConfig
from scanner.dns.resolver import DnsResolver


async def test_channels_are_loop_driven() -> None:
    resolver = DnsResolver(DnsConfig(servers=("127.0.0.1:5399",)), channel_queries=1)
    try:
        channel = resolver._take_channel()
        assert channel._event_thread is False  # aiodns honoured our _make_channel
        replacement = resolver._take_channel()  # rotated after one query: same mode
        assert replacement is not channel and replacement._event_thread is False
    finally:
        await resolver.close()
