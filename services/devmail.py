"""Development mail catcher: an SMTP server that keeps every message in a Maildir."""

from __future__ import annotations

import mailbox
import os
import socket
import time
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from itertools import count
from pathlib import Path
from typing import Any

_HOST = socket.gethostname().replace("/", "_").replace(":", "_")


class MaildirSink:
    """An aiosmtpd handler that files each message in Maildir `new/` as it arrived, its
    envelope's sender and recipients in Return-Path and X-RcptTo headers. It neither parses
    the message nor writes it out again: aiosmtpd's Mailbox handler did both, which cost a
    benchmark's purchase more CPU than the message's sender."""

    def __init__(self, directory: str) -> None:
        self.tmp = Path(directory, "tmp")
        self.new = Path(directory, "new")
        for part in (self.tmp, self.new, Path(directory, "cur")):
            part.mkdir(parents=True, exist_ok=True)
        self._serial = count()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        head = (
            f"Return-Path: <{envelope.mail_from}>\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        content = envelope.original_content or b""
        # Maildir's protocol: written under tmp/, then moved into new/ in one step, so a
        # reader never sees half a message.
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._serial)}.{_HOST}"
        staged = self.tmp / name
        staged.write_bytes(head + content)
        os.replace(staged, self.new / name)
        return "250 Message accepted for delivery"


def serve_forever(directory: str, port: int) -> None:
    from aiosmtpd.controller import Controller

    try:  # the services' event loop where it is installed: the catcher's protocol costs less
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    controller = Controller(MaildirSink(directory), hostname="127.0.0.1", port=port, loop=loop)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


def readable(message: Message) -> str:
    """A stored message as a person reads it: a header line, then its text decoded (the
    sender's base64 or quoted-printable undone), so a link in it can be copied."""
    when = message["Date"] or datetime.fromtimestamp(message.get_date(), UTC).isoformat()
    subject = str(make_header(decode_header(message["Subject"] or "")))
    text = next((p for p in message.walk() if p.get_content_type() == "text/plain"), message)
    raw = text.get_payload(decode=True)
    body = (
        raw.decode(text.get_content_charset() or "utf-8", "replace")
        if isinstance(raw, bytes)
        else str(text.get_payload())
    )
    return f"--- {when}  To: {message['To']}  Subject: {subject}\n{body}"


def read_messages(directory: str) -> list[Message]:
    """Every stored message, oldest first."""
    if not Path(directory, "new").exists():
        return []
    box = mailbox.Maildir(directory, create=False)
    messages = [box.get_message(key) for key in box.keys()]
    return sorted(messages, key=lambda m: m.get_date())
