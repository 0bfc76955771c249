"""The development mail catcher over a real SMTP conversation: what the services send is what
`read_messages` (and so the tests and `resellio mail`) reads back."""

from __future__ import annotations

from email.mime.text import MIMEText
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller

from services.devmail import MaildirSink, read_messages, readable
from tests.support.system import free_port


def _message(to: str, subject: str, body: str, charset: str) -> MIMEText:
    message = MIMEText(body, "plain", charset)
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
            # Plain ASCII goes as it is (a line's leading dot is doubled on the wire); UTF-8
            # goes in base64.
            await smtp.send_message(_message("b@x.test", "First", ".dotted\nline\n", "us-ascii"))
            await smtp.send_message(_message("a@x.test", "Second", "Zażółć\n", "utf-8"))
    finally:
        controller.stop()

    messages = read_messages(str(tmp_path))
    assert [m["Subject"] for m in messages] == ["First", "Second"]
    assert [m["X-RcptTo"] for m in messages] == ["b@x.test", "a@x.test"]
    assert messages[0]["Return-Path"] == "<no-reply@resellio.test>"
    bodies = [m.get_payload(decode=True).decode().replace("\r\n", "\n") for m in messages]
    assert bodies == [".dotted\nline\n", "Zażółć\n"]  # dot-stuffing undone, UTF-8 intact
    assert not list((tmp_path / "tmp").iterdir())  # nothing left half-written
    # What `resellio mail` prints: the text decoded, not the base64 it travelled in.
    shown = readable(messages[1]).replace("\r\n", "\n")
    header, body = shown.split("\n", 1)
    assert header.startswith("--- 20") and header.endswith("To: a@x.test  Subject: Second")
    assert body == "Zażółć\n"


def test_an_empty_maildir_reads_as_no_messages(tmp_path: Path) -> None:
    assert read_messages(str(tmp_path / "absent")) == []
    MaildirSink(str(tmp_path / "box"))
    assert read_messages(str(tmp_path / "box")) == []
