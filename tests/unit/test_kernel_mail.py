"""Queued mail becomes a plain-text message any client reads back as written, whatever the
alphabet of its subject and body."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

from sqlalchemy import MetaData

from services.kernel.db import Database
from services.kernel.mail import MailSender, SmtpSettings


def sender() -> MailSender:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", "svc", MetaData(schema="svc"))
    return MailSender(db, SmtpSettings(sender="Resellio <no-reply@resellio.local>"))


def test_message_reads_back_as_written_in_any_alphabet() -> None:
    mail = sender()
    for subject, body in [
        ("Your Resellio order #12", "Hello Ann,\n\nTotal: 50.00 USD\n"),
        ("Bilet na Wesele — Łódź", "Cześć Zoë,\n\n2 x Koncert – Ñandú at 50.00 PLN\n"),
    ]:
        queued = datetime(2026, 11, 27, 7, 30, tzinfo=UTC)
        row = SimpleNamespace(
            id=7, recipient="ann@example.com", subject=subject, body=body, created_at=queued
        )
        parsed = message_from_bytes(mail._message(row, row.recipient))
        assert parsedate_to_datetime(parsed["Date"]) == queued
        assert parsed["Message-ID"].startswith("<svc.7@")
        assert str(make_header(decode_header(parsed["Subject"]))) == subject
        assert parsed["To"] == "ann@example.com"
        assert parsed["From"] == "Resellio <no-reply@resellio.local>"
        assert parsed.get_payload(decode=True).decode(parsed.get_content_charset()) == body
    assert mail.sender == "no-reply@resellio.local"
