"""Outgoing mail: queued in the service's schema in the same transaction as the change that
causes it, sent after commit by a background sender over SMTP (a failed send never changes
the answer to the request, and is retried)."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from email.header import Header
from email.mime.text import MIMEText
from email.policy import SMTPUTF8
from email.utils import format_datetime, parseaddr
from typing import Any

import aiosmtplib
import msgspec
from email_validator import validate_email
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    select,
    text,
    update,
)

from services.kernel.db import Database, UnitOfWork

log = logging.getLogger("resellio.mail")


class SmtpSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 1025
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    sender: str = "Resellio <no-reply@resellio.local>"

    @classmethod
    def from_env(cls, env: dict[str, str]) -> SmtpSettings:
        return cls(
            host=env.get("SMTP_HOST", "127.0.0.1"),
            port=int(env.get("SMTP_PORT", "1025")),
            username=env.get("SMTP_USERNAME") or None,
            password=env.get("SMTP_PASSWORD") or None,
            use_tls=env.get("SMTP_USE_TLS", "false").lower() in ("1", "true", "yes"),
            sender=env.get("SMTP_FROM", "Resellio <no-reply@resellio.local>"),
        )


def mail_table(metadata: MetaData) -> Table:
    name = f"{metadata.schema}.mail_queue"
    if name in metadata.tables:
        return metadata.tables[name]
    return Table(
        "mail_queue",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("recipient", Text, nullable=False),
        Column("subject", Text, nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("sent_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
    )


async def queue_mail(
    uow: UnitOfWork, recipient: str, subject: str, body: str, *, with_commit: bool = False
) -> None:
    """Queue a message with the unit of work: sent once (and only if) it commits.
    `with_commit`: the row goes in the COMMIT's message (one round trip less; its text is then
    part of a statement, which PostgreSQL logs if the commit fails: never for a message that
    carries a secret, such as a verification or reset link)."""
    await uow.insert(
        "mail_queue", at_commit=with_commit, recipient=recipient, subject=subject, body=body
    )


MESSAGES_PER_SESSION = 100


class MailSender:
    """Sends queued mail; safe with several instances (rows claimed with SKIP LOCKED)."""

    def __init__(self, db: Database, smtp: SmtpSettings, max_attempts: int = 8) -> None:
        self.db = db
        self.smtp = smtp
        self.max_attempts = max_attempts
        self.table = mail_table(db.metadata)
        self.sender = parseaddr(smtp.sender)[1]
        self.wake = asyncio.Event()
        # One SMTP session while mail keeps coming, closed once the queue is empty: a session
        # costs a connection, EHLO, perhaps STARTTLS and a login, and QUIT, which batch after
        # batch of a busy hour would otherwise each pay.
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent_in_session = 0

    async def run(self) -> None:
        backoff = 1.0
        try:
            while True:
                try:
                    sent, failed = await self.send_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("mail sender failed: %s", exc)
                    sent, failed = 0, 1
                if failed:
                    # The SMTP server is away or refusing: wait before spending more attempts.
                    self._hang_up()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                backoff = 1.0
                if not sent:
                    await self.close()  # nothing queued: no session left idle on the server
                    try:
                        await asyncio.wait_for(self.wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                    self.wake.clear()
        finally:
            self._hang_up()

    async def close(self) -> None:
        """End the SMTP session, if one is open, with QUIT."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                _drop(smtp)

    def _hang_up(self) -> None:
        _drop(self._smtp)
        self._smtp = None

    async def _session(self) -> aiosmtplib.SMTP:
        """The open SMTP session, or a new one if there is none, the server ended it, or it
        carried MESSAGES_PER_SESSION already (servers may refuse more, and say so late)."""
        if self._smtp is not None and not self._smtp.is_connected:
            self._hang_up()
        if self._smtp is not None and self._sent_in_session >= MESSAGES_PER_SESSION:
            await self.close()
        if self._smtp is None:
            smtp = self._client()
            await smtp.connect()
            self._smtp, self._sent_in_session = smtp, 0
        self._sent_in_session += 1
        return self._smtp

    async def send_batch(self, limit: int = 20) -> tuple[int, int]:
        """Send up to `limit` queued messages over the open SMTP session; (sent, failed). A
        message the server refuses counts an attempt and ends the session (the next one gets
        a fresh session)."""
        t = self.table
        sent: list[int] = []
        failed = 0
        async with self.db.engine.connect() as conn, conn.begin():
            rows = (
                await conn.execute(
                    select(t)
                    .where(t.c.sent_at.is_(None), t.c.attempts < self.max_attempts)
                    .order_by(t.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            cut_off = False
            try:
                for row in rows:
                    try:
                        address, options = _envelope(row.recipient)
                        message = self._message(row, address, utf8=bool(options))
                    except ValueError as exc:  # UnicodeError is one
                        await self._give_up(conn, row, exc)  # this message cannot be written
                        continue
                    try:
                        smtp = await self._session()
                        await smtp.sendmail(self.sender, [address], message, mail_options=options)
                        sent.append(row.id)
                    except aiosmtplib.SMTPNotSupported as exc:
                        self._hang_up()
                        if options and self.sender.isascii():  # SMTPUTF8 for this address
                            await self._give_up(conn, row, exc)
                            continue
                        failed += 1
                        await self._count_attempt(conn, row, exc)
                    except (aiosmtplib.SMTPException, OSError) as exc:
                        failed += 1
                        self._hang_up()
                        await self._count_attempt(conn, row, exc)
            except asyncio.CancelledError:
                # Stopped (a shutdown): what went is marked and committed before stopping, or
                # the next process would send it again.
                cut_off = True
            finally:
                if sent:
                    await conn.execute(
                        update(t).where(t.c.id.in_(sent)).values(sent_at=text("now()"))
                    )
        if cut_off:
            raise asyncio.CancelledError
        return len(sent), failed

    async def _count_attempt(
        self, conn: Any, row: Any, exc: Exception, *, final: bool = False
    ) -> None:
        t = self.table
        attempts = self.max_attempts if final else t.c.attempts + 1
        await conn.execute(
            update(t).where(t.c.id == row.id).values(attempts=attempts, last_error=str(exc)[:500])
        )

    async def _give_up(self, conn: Any, row: Any, exc: Exception) -> None:
        """A message that can never go as it is (its address or text cannot be written, or it
        needs SMTPUTF8, which this server lacks): left unsent at once with its reason, and no
        pause for the others. What the server refuses, or its absence, is tried again."""
        log.warning("mail %s to %r given up: %s", row.id, row.recipient, exc)
        await self._count_attempt(conn, row, exc, final=True)

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.smtp.host,
            port=self.smtp.port,
            username=self.smtp.username,
            password=self.smtp.password,
            start_tls=self.smtp.use_tls,
            timeout=10,
            local_hostname=_local_hostname(),
        )

    def _message(self, row: Any, address: str, *, utf8: bool = False) -> bytes:
        # The compat32 message classes: a fifth of the CPU of EmailMessage's header registry
        # for the same plain-text message (each purchase sends one).
        message = MIMEText(row.body, "plain", "utf-8")
        message["From"] = self.smtp.sender
        message["To"] = address  # beyond ASCII only with SMTPUTF8: then written as UTF-8
        # One line: a subject carries an event's name, which may hold line breaks (a header
        # injection, which the email package refuses, or a broken header, which it does not).
        subject = " ".join(row.subject.splitlines())
        message["Subject"] = subject if utf8 or subject.isascii() else Header(subject, "utf-8")
        # RFC 5322's required Date (when the change that sends it committed), and an id that
        # stays the same if the message is sent again after a lost answer.
        message["Date"] = format_datetime(row.created_at)
        message["Message-ID"] = f"<{self.db.schema}.{row.id}@{_local_hostname()}>"
        # RFC 6532: with SMTPUTF8 the headers are UTF-8 as they are; an address is never an
        # encoded-word (RFC 2047 §5).
        return message.as_bytes(policy=SMTPUTF8) if utf8 else message.as_bytes()


def _envelope(recipient: str) -> tuple[str, list[str]]:
    """The address as the SMTP envelope carries it, and the MAIL options it needs: a domain
    beyond ASCII in its ASCII form (IDNA), and SMTPUTF8 only for a local part beyond ASCII
    (auth takes both, API.md §2.3)."""
    if recipient.isascii():
        return recipient, []
    # The domain's ASCII form as auth's email_validator took it (IDNA 2008, UTS #46 without
    # transitional mapping): Python's codec, IDNA 2003, would send straße.de's mail to
    # strasse.de, somebody else's domain. An address it no longer takes is a ValueError.
    checked = validate_email(recipient, check_deliverability=False)
    address = f"{checked.local_part}@{checked.ascii_domain}"
    return address, [] if address.isascii() else ["SMTPUTF8"]


def _drop(smtp: aiosmtplib.SMTP | None) -> None:
    if smtp is not None:
        smtp.close()


@functools.cache
def _local_hostname() -> str:
    """The name this host gives in EHLO, looked up once (not in a thread per message)."""
    return socket.getfqdn()
