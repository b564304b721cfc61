"""A delaying loopback TCP relay: emulated round-trip time, and a connection counter for any tool.

With alternates it is also a round-robin front: connection n goes to target n mod k, so one address
answers from servers configured differently (a load balancer whose backends disagree).

The kernel here has no netem qdisc, so latency is added in user space: every chunk read from one side
is delivered to the other side ``one_way_delay`` seconds after it arrived (order preserved, no
bandwidth limit), which gives a round-trip time of twice that. Counting accepted connections tells
how many sessions a tool (ours or a peer) opened against a server, whatever its own logs say.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["DelayRelay", "RelaySpec"]


@dataclass(frozen=True, slots=True)
class RelaySpec:
    listen: tuple[str, int]
    target: tuple[str, int]
    one_way_delay: float  # seconds
    # Further targets: connections go to target, alternates[0], ... in turn, like a round-robin load
    # balancer in front of servers that may be configured differently.
    alternates: tuple[tuple[str, int], ...] = ()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader → writer, each chunk held back ``delay`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        sender.cancel()
    finally:
        if not sender.done():
            sender.cancel()


class DelayRelay:
    """Runs relays in a background thread with its own event loop."""

    def __init__(self, specs: list[RelaySpec]) -> None:
        self.specs = specs
        self.connections: dict[tuple[str, int], int] = {spec.listen: 0 for spec in specs}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._ready = threading.Event()

    def _handler(self, spec: RelaySpec) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            turn = self.connections[spec.listen]
            self.connections[spec.listen] += 1
            targets = (spec.target, *spec.alternates)
            try:
                server_reader, server_writer = await asyncio.open_connection(*targets[turn % len(targets)])
            except OSError:
                client_writer.close()
                return
            try:
                await asyncio.gather(
                    _pump(client_reader, server_writer, spec.one_way_delay),
                    _pump(server_reader, client_writer, spec.one_way_delay),
                )
            finally:
                for w in (client_writer, server_writer):
                    w.close()

        return handle

    async def _start(self) -> None:
        for spec in self.specs:
            self._servers.append(await asyncio.start_server(self._handler(spec), *spec.listen, reuse_address=True))

    def start(self) -> None:
        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.run_until_complete(self._start())
            self._ready.set()
            loop.run_forever()
            for server in self._servers:
                server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="delay-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("relay did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> DelayRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
