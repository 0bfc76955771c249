"""The mail sender over a real SMTP server and a real queue: each queued message delivered
once, batch after batch over one SMTP session while mail keeps coming, a session ended (QUIT)
once the queue is empty, a server that went away costs no message, a message the server
refuses is tried so many times, and mail of a change that rolled back is never sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from services.kernel import mail
from services.kernel.db import Database
from services.kernel.mail import MailSender, SmtpSettings, mail_table, queue_mail
from tests.integration.conftest import schema_with
from tests.support.shop import eventually
from tests.support.system import free_port


class Recorder:
    """An SMTP server's handler that keeps what it was sent, and on which connection; it
    refuses the messages to the recipients in `refused`."""

    def __init__(self) -> None:
        self.messages: list[tuple[tuple[str, int], str]] = []  # (client's address, recipient)
        self.contents: list[bytes] = []
        self.quits = 0
        self.refused: set[str] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((session.peer, envelope.rcpt_tos[0]))
        self.contents.append(envelope.content)
        if envelope.rcpt_tos[0] in self.refused:
            return "550 5.1.1 Mailbox unavailable"
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    @property
    def sessions(self) -> int:
        return len({peer for peer, _ in self.messages})


@pytest.fixture
async def db(integration_db_url: str, schema_name: str) -> AsyncIterator[Database]:
    async with schema_with(integration_db_url, schema_name, mail_table) as database:
        yield database


@pytest.fixture
def smtp() -> AsyncIterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, recorder
    controller.stop()


def sender_for(db: Database, controller: Controller, max_attempts: int = 8) -> MailSender:
    return MailSender(db, SmtpSettings(host="127.0.0.1", port=controller.port), max_attempts)


async def queue(db: Database, count: int, start: int = 0) -> list[str]:
    recipients = [f"buyer{i}@example.com" for i in range(start, start + count)]
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(mail_table(db.metadata)),
            [{"recipient": r, "subject": "Your order", "body": "Thank you\n"} for r in recipients],
        )
    return recipients


async def unsent(db: Database) -> int:
    t = mail_table(db.metadata)
    async with db.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(t.c.sent_at.is_(None))) or 0)


async def test_batch_after_batch_goes_over_one_session_until_the_queue_is_empty(
    db: Database, smtp: tuple[Controller, Recorder]
) -> None:
    controller, server = smtp
    sender = sender_for(db, controller)
    recipients = await queue(db, 45)
    assert [await sender.send_batch(limit=20) for _ in range(3)] == [(20, 0), (20, 0), (5, 0)]
    assert [rcpt for _, rcpt in server.messages] == recipients  # each once, in queue order
    assert (server.sessions, server.quits) == (1, 0)
    # RFC 5322's Date, and a Message-ID of its own per queued message.
    parsed = [message_from_bytes(content) for content in server.contents]
    assert all(parsedate_to_datetime(m["Date"]).tzinfo is not None for m in parsed)
    assert len({m["Message-ID"] for m in parsed}) == 45
    await sender.close()
    assert server.quits == 1
    assert await unsent(db) == 0


class Slow(Recorder):
    """Answers each message after a moment, as a remote server does."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(0.05)
        return answer


async def test_a_sender_stopped_mid_batch_marks_what_went_and_nothing_goes_twice(
    db: Database,
) -> None:
    """A shutdown cancels the sender in the middle of a batch: the messages that went are
    marked sent before it stops (before, the batch's transaction rolled their marks back and
    the next process sent them again), and the next sender sends only the rest."""
    server = Slow()
    controller = Controller(server, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        recipients = await queue(db, 20)
        first = sender_for(db, controller)
        batch = asyncio.create_task(first.send_batch(limit=20))

        async def five_went() -> bool:
            return len(server.messages) >= 5

        assert await eventually(five_went)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        went = len(server.messages)
        assert 5 <= went < 20
        assert await unsent(db) in (20 - went, 20 - went + 1)  # the one in flight may go again
        await sender_for(db, controller).send_batch(limit=20)
        delivered = [rcpt for _, rcpt in server.messages]
        assert sorted(set(delivered)) == sorted(recipients)
        assert len(delivered) - len(set(delivered)) <= 1
        assert await unsent(db) == 0
    finally:
        controller.stop()


async def test_a_session_carries_at_most_so_many_messages(
    db: Database, smtp: tuple[Controller, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, server = smtp
    monkeypatch.setattr(mail, "MESSAGES_PER_SESSION", 5)
    sender = sender_for(db, controller)
    await queue(db, 12)
    assert await sender.send_batch(limit=20) == (12, 0)
    await sender.close()
    assert (server.sessions, server.quits) == (3, 3)


async def test_the_running_sender_quits_once_idle_and_reconnects_for_new_mail(
    db: Database, smtp: tuple[Controller, Recorder]
) -> None:
    controller, server = smtp
    sender = sender_for(db, controller)
    task = asyncio.create_task(sender.run())
    try:
        for round_ in range(2):
            await queue(db, 3, start=3 * round_)
            sender.wake.set()

            async def quit_after_delivery(n: int = round_ + 1) -> bool:
                return server.quits == n  # delivered, then QUIT once nothing is queued

            assert await eventually(quit_after_delivery)
        assert len(server.messages) == 6 and server.sessions == 2
        assert await unsent(db) == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_server_that_restarted_costs_no_message(db: Database) -> None:
    server, port = Recorder(), free_port()
    first = Controller(server, hostname="127.0.0.1", port=port)
    first.start()
    sender = sender_for(db, first)
    await queue(db, 2)
    assert await sender.send_batch() == (2, 0)
    first.stop()  # the server goes away with the session open, and comes back
    second = Controller(server, hostname="127.0.0.1", port=port)
    second.start()
    try:
        await asyncio.sleep(0.1)
        await queue(db, 2, start=2)
        sent, failed = await sender.send_batch()
        if failed:  # the loss was noticed only by the send: that message is tried again
            assert (sent, failed) == (1, 1)
            assert await sender.send_batch() == (1, 0)
        assert [rcpt for _, rcpt in server.messages] == [f"buyer{i}@example.com" for i in range(4)]
        assert server.sessions == 2
        await sender.close()
    finally:
        second.stop()


async def test_a_refused_message_is_tried_so_many_times_then_left_with_the_servers_answer(
    db: Database, smtp: tuple[Controller, Recorder]
) -> None:
    """Each refusal counts an attempt (the other mail goes on); once the attempts reach the
    cap the message is not offered again, and stays unsent with the server's answer."""
    controller, server = smtp
    refused, accepted = await queue(db, 2)
    server.refused.add(refused)
    sender = sender_for(db, controller, max_attempts=3)
    assert [await sender.send_batch() for _ in range(4)] == [(1, 1), (0, 1), (0, 1), (0, 0)]
    assert [rcpt for _, rcpt in server.messages] == [refused, accepted, refused, refused]
    t = mail_table(db.metadata)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(t).where(t.c.recipient == refused))).one()
    assert (row.attempts, row.sent_at) == (3, None)
    assert "Mailbox unavailable" in row.last_error
    await sender.close()


async def _queue_rows(db: Database, rows: list[tuple[str, str]]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(mail_table(db.metadata)),
            [{"recipient": r, "subject": subject, "body": "Thank you\n"} for r, subject in rows],
        )


@pytest.fixture
def smtp_ascii() -> AsyncIterator[tuple[Controller, Recorder]]:
    """A server without SMTPUTF8 (aiosmtpd's Controller offers it unless told not to)."""
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    controller.start()
    yield controller, recorder
    controller.stop()


async def test_an_address_or_subject_beyond_ascii_or_one_line_never_holds_the_rest_back(
    db: Database, smtp_ascii: tuple[Controller, Recorder]
) -> None:
    """Auth takes addresses beyond ASCII (API.md §2.3), and an event's name (in a subject)
    may hold a line break. A domain beyond ASCII goes as its IDNA form; a subject goes on one
    line (no header injected); a local part beyond ASCII to a server without SMTPUTF8 can
    never go, and is given up at once with its reason: the mail after it is sent in the same
    batch, not after minutes of retries."""
    controller, server = smtp_ascii
    await _queue_rows(
        db,
        [
            ("üabc@example.com", "Welcome"),
            ("a@bücher.example", "Welcome"),
            ("x@straße.de", "Welcome"),  # not strasse.de (IDNA 2003), somebody else's domain
            ("gala@example.com", "Your ticket for Gala\nX-Injected: yes was sold"),
            ("ok@example.com", "Your order"),
        ],
    )
    sender = sender_for(db, controller)
    assert await sender.send_batch() == (4, 0)
    assert [rcpt for _, rcpt in server.messages] == [
        "a@xn--bcher-kva.example",
        "x@xn--strae-oqa.de",
        "gala@example.com",
        "ok@example.com",
    ]
    injected = message_from_bytes(server.contents[2])
    assert injected["X-Injected"] is None
    assert injected["Subject"] == "Your ticket for Gala X-Injected: yes was sold"
    t = mail_table(db.metadata)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(t).where(t.c.recipient == "üabc@example.com"))).one()
    assert (row.attempts, row.sent_at) == (8, None) and "SMTPUTF8" in row.last_error
    assert await sender.send_batch() == (0, 0)
    await sender.close()


async def test_a_local_part_beyond_ascii_goes_to_a_server_with_smtputf8(
    db: Database, smtp: tuple[Controller, Recorder]
) -> None:
    """As to the development mail catcher, which offers SMTPUTF8."""
    controller, server = smtp
    await _queue_rows(db, [("üabc@bücher.example", "Willkommen, Ü")])
    sender = sender_for(db, controller)
    assert await sender.send_batch() == (1, 0)
    assert [rcpt for _, rcpt in server.messages] == ["üabc@xn--bcher-kva.example"]
    # RFC 6532: the address as it is, in UTF-8, never an encoded-word (RFC 2047 §5).
    assert "To: üabc@xn--bcher-kva.example\r\n".encode() in server.contents[0]
    await sender.close()


async def test_a_sender_misconfigured_gives_up_no_mail(db: Database) -> None:
    """A setting the SMTP client refuses (a host name with a line break, from a secret file)
    is no fault of the messages: none is given up or counted, and they go once it is fixed."""
    await queue(db, 2)
    broken = MailSender(db, SmtpSettings(host="127.0.0.1\n", port=free_port()))
    with pytest.raises(ValueError):
        await broken.send_batch()
    t = mail_table(db.metadata)
    async with db.engine.connect() as conn:
        attempts = (await conn.execute(select(t.c.attempts))).scalars().all()
    assert attempts == [0, 0]


async def test_mail_queued_with_a_change_that_rolls_back_is_never_sent(
    db: Database, smtp: tuple[Controller, Recorder]
) -> None:
    """Whether its row was written at once or was to go with the COMMIT."""
    controller, server = smtp
    for with_commit in (False, True):
        async with db.unit_of_work() as uow:  # no commit: rolled back
            await queue_mail(
                uow, "gone@example.com", "Your order", "Thank you\n", with_commit=with_commit
            )
    async with db.unit_of_work() as uow:
        await queue_mail(uow, "kept@example.com", "Your order", "Thank you\n", with_commit=True)
        await uow.commit()
    sender = sender_for(db, controller)
    assert await sender.send_batch() == (1, 0)
    assert [rcpt for _, rcpt in server.messages] == ["kept@example.com"]
    await sender.close()
