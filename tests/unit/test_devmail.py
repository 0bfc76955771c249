"""The development mail catcher over a real SMTP conversation: what the services send is what
`read_messages` (and so the tests and `resellio mail`) reads back."""

from __future__ import annotations

from email.mime.text import MIMEText
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller

from services.devmail import MaildirSink, read_messages
from tests.support.system import free_port


def _message(to: str, subject: str, body: str) -> MIMEText:
    message = MIMEText(body, "plain", "utf-8")
    message["From"] = "Resellio <no-reply@resellio.test>"
    message["To"] = to
    message["Subject"] = subject
    return message


async def test_every_message_sent_is_read_back_whole_in_the_order_it_arrived(
    tmp_path: Path,
) -> None:
    port = free_port()
    controller = Controller(MaildirSink(str(tmp_path)), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            await smtp.send_message(_message("b@x.test", "First", "Zażółć\n.dotted line\n"))
            await smtp.send_message(_message("a@x.test", "Second", "hello"))
    finally:
        controller.stop()

    messages = read_messages(str(tmp_path))
    assert [m["Subject"] for m in messages] == ["First", "Second"]
    assert [m["X-RcptTo"] for m in messages] == ["b@x.test", "a@x.test"]
    assert messages[0]["Return-Path"] == "<no-reply@resellio.test>"
    body = messages[0].get_payload(decode=True).decode()
    # SMTP's dot-stuffing undone, the UTF-8 body intact.
    assert body.replace("\r\n", "\n") == "Zażółć\n.dotted line\n"
    assert not list((tmp_path / "tmp").iterdir())  # nothing left half-written


def test_an_empty_maildir_reads_as_no_messages(tmp_path: Path) -> None:
    assert read_messages(str(tmp_path / "absent")) == []
    MaildirSink(str(tmp_path / "box"))
    assert read_messages(str(tmp_path / "box")) == []
