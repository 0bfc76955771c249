"""Tables of the auth schema."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, Table, Text, text

from services.kernel.mail import mail_table
from services.kernel.outbox import messaging_tables

metadata = MetaData(schema="auth")
outbox, inbox = messaging_tables(metadata)
mail_queue = mail_table(metadata)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("public_key", Text, nullable=False),  # raw Ed25519 public key, base64url
    # Only the development key is kept here; a production key comes from the environment.
    Column("private_pem", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # A retired key stays published for one maximum token lifetime (API.md §2.4).
    Column("retired_at", DateTime(timezone=True)),
)
