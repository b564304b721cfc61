"""The SMTP side of a STARTTLS probe as a pure state machine: reply bytes in, next action out.

Model: python-hyper/h11. No sockets, no clock, no asyncio here; a driver (``scanner.smtp.session``)
moves bytes between a ``ByteStream`` and this object:

    action = dialogue.next_action()
    Send(data)      -> write ``data``
    NEED_DATA       -> read, then ``receive_data(chunk)`` (``b""`` at EOF)
    TAKE_BUFFERED   -> ``receive_unprotected(stream.take_buffered())`` (the 220 to STARTTLS arrived)
    START_TLS       -> handshake (or a crafted ClientHello), then ``tls_established()`` to QUIT politely
    Done / Failed   -> the conversation is over; ``Failed`` says in which phase, how and why

The decisions (RFC 5321, RFC 3207): the banner must be 220; EHLO, and HELO when EHLO is refused with
a 5xx (RFC 5321 §3.2); 421 or any other 4xx at EHLO ends the probe (a throttle, never "no TLS");
STARTTLS only when advertised, and only a 220 to it starts TLS; bytes the server sent after that 220
were not protected by TLS (RFC 3207 §4.2, the command-injection check) unless they are a TLS alert
record (the server's TLS layer refusing before our ClientHello); QUIT when the conversation ends
without a failure. The probe never sends MAIL, RCPT, VRFY or DATA.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

from scanner.sansio import NEED_DATA, NeedData
from scanner.smtp.reply import EhloInfo, Reply, ReplyError, ReplyReader, parse_ehlo
from scanner.status import FailureClass, Phase
from scanner.tls.messages import AlertDescription, AlertLevel, ContentType

__all__ = [
    "START_TLS",
    "TAKE_BUFFERED",
    "Action",
    "Done",
    "EarlyAlert",
    "Failed",
    "Send",
    "SmtpDialogue",
    "early_tls_alert",
]

# Bytes kept of what arrived after the 220 to STARTTLS: enough to recognise a TLS alert record.
KEPT_UNPROTECTED: Final = 1024


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


class Step(Enum):
    TAKE_BUFFERED = "take_buffered"
    START_TLS = "start_tls"


TAKE_BUFFERED: Final = Step.TAKE_BUFFERED
START_TLS: Final = Step.START_TLS


@dataclass(frozen=True, slots=True)
class Done:
    """The conversation ended without a failure (QUIT sent, or the server left after it)."""


@dataclass(frozen=True, slots=True)
class Failed:
    phase: Phase
    failure_class: FailureClass
    detail: str


Action: TypeAlias = Send | NeedData | Step | Done | Failed


@dataclass(frozen=True, slots=True)
class EarlyAlert:
    """A TLS alert record the server sent right after its 220 to STARTTLS, before our ClientHello."""

    level: int
    description: int

    @property
    def detail(self) -> str:
        known = self.description in set(AlertDescription)
        name = AlertDescription(self.description).name.lower() if known else "unknown"
        level = "fatal" if self.level == AlertLevel.FATAL else "warning"
        return f"{level} alert {name} ({self.description}) sent right after the 220 to STARTTLS, before our ClientHello"


def early_tls_alert(data: bytes) -> EarlyAlert | None:
    """The alert, when bytes received after the 220 to STARTTLS begin with a TLS alert record.

    Such bytes are the server's TLS layer refusing the handshake before it began (an OpenSSL server with
    no protocol version enabled sends protocol_version at once, RFC 8446 §6.2), not unprotected SMTP
    (RFC 3207 §4.2): recorded as the handshake's failure, never as plaintext injection.
    """
    if len(data) < 7 or data[0] != ContentType.ALERT or data[1] != 3 or data[2] > 4:
        return None
    if int.from_bytes(data[3:5], "big") != 2 or data[5] not in (AlertLevel.WARNING, AlertLevel.FATAL):
        return None
    return EarlyAlert(data[5], data[6])


def _reply_failure(phase: Phase, reply: Reply) -> Failed:
    """A negative reply as a failure: 421 (RFC 5321 §3.8, a throttle), other 4xx, or 5xx."""
    if reply.code == 421:
        failure = FailureClass.SMTP_421
    elif reply.code >= 500:
        failure = FailureClass.SMTP_5XX
    else:
        failure = FailureClass.SMTP_4XX
    return Failed(phase, failure, f"{reply.code} {reply.text}"[:500])


class _Await(Enum):
    """What the dialogue waits for next."""

    REPLY = "reply"  # a reply to the current phase's command (or the banner)
    UNPROTECTED = "unprotected"  # the stream's buffered bytes after the 220 to STARTTLS
    HANDSHAKE = "handshake"  # the driver's TLS handshake
    NOTHING = "nothing"  # the next action is already decided (``_next``)


class SmtpDialogue:
    """One probe's SMTP conversation, from the banner to QUIT. Everything learnt stays readable whatever
    phase the conversation ends in (the banner and EHLO of a server whose STARTTLS fails)."""

    def __init__(self, ehlo_name: str) -> None:
        self._ehlo_name = ehlo_name
        self._replies = ReplyReader()
        self.phase: Phase = Phase.BANNER
        self._await = _Await.REPLY
        self._next: Action = NEED_DATA
        self.banner: Reply | None = None
        self.ehlo: EhloInfo | None = None
        self.ehlo_code: int | None = None
        self.used_helo = False
        self.starttls_reply: Reply | None = None
        self.plaintext_after_starttls = False
        self.early_alert: EarlyAlert | None = None

    # ---- inputs ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means it closed its side."""
        if self._await is not _Await.REPLY:
            return  # nothing is expected: the driver reads only on NEED_DATA
        if not data:
            self._on_eof()
            return
        self._replies.feed(data)

    def receive_unprotected(self, stream_buffered: bytes) -> None:
        """The stream's buffered bytes at the 220 to STARTTLS (what our reply reader has not seen)."""
        if self._await is not _Await.UNPROTECTED:
            raise RuntimeError(f"receive_unprotected while awaiting {self._await.value}")
        # RFC 3207 §4.2: anything already received after the 220 was not protected by TLS; a server
        # (or a man in the middle) that sends it is vulnerable to command injection. Discard, flag;
        # unless it is a TLS alert: the server's TLS layer answering early, not plaintext.
        unprotected = (self._replies.buffered() + stream_buffered)[:KEPT_UNPROTECTED]
        self._replies.discard_buffer()
        self.early_alert = early_tls_alert(unprotected)
        self.plaintext_after_starttls = bool(unprotected) and self.early_alert is None
        if self.early_alert is not None:  # the server refused the handshake before it began
            self._finish(Failed(Phase.TLS_HANDSHAKE, FailureClass.TLS_ALERT, self.early_alert.detail))
        else:
            self._decide(START_TLS, _Await.HANDSHAKE)

    def tls_established(self) -> None:
        """The handshake succeeded: say goodbye over TLS."""
        if self._await is not _Await.HANDSHAKE:
            raise RuntimeError(f"tls_established while awaiting {self._await.value}")
        self._replies = ReplyReader()  # RFC 3207 §4.2: nothing from before the handshake carries over
        self._quit()

    # ---- output ---------------------------------------------------------------------------------

    def next_action(self) -> Action:
        """The next thing to do. ``NEED_DATA`` is a normal answer: read and feed more bytes.

        A ``Send`` is returned once; every other action repeats until the input it asks for arrives.
        """
        if self._next is NEED_DATA and self._await is _Await.REPLY:
            try:
                reply = self._replies.next_reply()
            except ReplyError as exc:
                if self.phase is Phase.QUIT:  # the conclusion is already made
                    return self._finish(Done())
                return self._finish(Failed(self.phase, exc.failure_class, exc.detail))
            if isinstance(reply, NeedData):
                return NEED_DATA
            self._on_reply(reply)
        action = self._next
        if isinstance(action, Send):
            self._next = NEED_DATA  # a command goes out once; then its reply is awaited
        return action

    # ---- decisions ------------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        handler = {
            Phase.BANNER: self._on_banner,
            Phase.EHLO: self._on_ehlo,
            Phase.HELO: self._on_helo,
            Phase.STARTTLS: self._on_starttls,
            Phase.QUIT: self._on_quit,
        }[self.phase]
        handler(reply)

    def _on_banner(self, reply: Reply) -> None:
        self.banner = reply
        if reply.code != 220:
            self._finish(_reply_failure(Phase.BANNER, reply))
            return
        self._command(Phase.EHLO, f"EHLO {self._ehlo_name}")

    def _on_ehlo(self, reply: Reply) -> None:
        self.ehlo_code = reply.code
        if reply.code == 250:
            self.ehlo = parse_ehlo(reply)
            if self.ehlo.starttls:
                self._command(Phase.STARTTLS, "STARTTLS")
            else:
                self._quit()
            return
        if reply.code == 421 or reply.code < 500:
            self._finish(_reply_failure(Phase.EHLO, reply))
            return
        # RFC 5321 §3.2: a server that rejects EHLO may still speak plain SMTP. HELO has no extensions,
        # so STARTTLS is unavailable: the probe still answers the question ("no STARTTLS").
        self.used_helo = True
        self._command(Phase.HELO, f"HELO {self._ehlo_name}")

    def _on_helo(self, reply: Reply) -> None:
        if reply.code != 250:
            self._finish(_reply_failure(Phase.HELO, reply))
            return
        self._quit()

    def _on_starttls(self, reply: Reply) -> None:
        self.starttls_reply = reply
        if reply.code != 220:
            self._finish(_reply_failure(Phase.STARTTLS, reply))
            return
        self.phase = Phase.TLS_HANDSHAKE
        self._decide(TAKE_BUFFERED, _Await.UNPROTECTED)

    def _on_quit(self, _reply: Reply) -> None:
        self._finish(Done())  # whatever the server answers to QUIT, the conclusion is made

    def _on_eof(self) -> None:
        if self.phase is Phase.QUIT:  # a server that drops us at QUIT is fine
            self._finish(Done())
        else:
            self._finish(Failed(self.phase, FailureClass.CLOSED, "connection closed by server"))

    def _command(self, phase: Phase, line: str) -> None:
        self.phase = phase
        self._decide(Send(line.encode("ascii") + b"\r\n"), _Await.REPLY)

    def _quit(self) -> None:
        self._command(Phase.QUIT, "QUIT")

    def _decide(self, action: Action, then: _Await) -> None:
        self._next = action
        self._await = then

    def _finish(self, outcome: Done | Failed) -> Done | Failed:
        self._decide(outcome, _Await.NOTHING)
        return outcome
