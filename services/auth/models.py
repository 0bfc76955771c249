"""Tables of the auth schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

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

# The account state is derived from the facts that make it, never stored by hand, so that
# an unban (clearing banned_at and a rejection) restores exactly the state before (§2.2).
ACCOUNT_STATE_SQL = (
    "CASE WHEN banned_at IS NOT NULL OR organizer_rejected THEN 'banned'"
    " WHEN role = 'customer' AND NOT email_verified THEN 'unverified'"
    " ELSE 'active' END"
)

users = Table(
    "users",
    metadata,
    Column("user_id", Integer, Identity(), primary_key=True),
    Column("email", Text, nullable=False),  # domain lower-cased, local part as given
    Column("login", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("role", Text, nullable=False),  # customer | organizer | administrator
    Column("role_id", Integer, nullable=False),  # id in the role's own table
    Column("email_verified", Boolean, nullable=False, server_default=text("false")),
    Column("banned_at", DateTime(timezone=True)),
    Column("organizer_rejected", Boolean, nullable=False, server_default=text("false")),
    Column("account_state", Text, Computed(ACCOUNT_STATE_SQL, persisted=True), nullable=False),
    # Access tokens with an earlier `iat` are revoked (bans, password change or reset).
    Column("tokens_invalid_before", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
# Emails are unique whatever their case.
Index("users_email_key", func.lower(users.c.email), unique=True)

# Each role numbers its members separately: customer id, organizer id, admin id (§2.1).
customers = Table(
    "customers",
    metadata,
    Column("customer_id", Integer, Identity(), primary_key=True),
    Column("user_id", ForeignKey("users.user_id"), nullable=False, unique=True),
)
organizers = Table(
    "organizers",
    metadata,
    Column("organizer_id", Integer, Identity(), primary_key=True),
    Column("user_id", ForeignKey("users.user_id"), nullable=False, unique=True),
    Column("company_name", Text, nullable=False),
    Column("is_verified", Boolean, nullable=False, server_default=text("false")),
)
administrators = Table(
    "administrators",
    metadata,
    Column("admin_id", Integer, Identity(), primary_key=True),
    Column("user_id", ForeignKey("users.user_id"), nullable=False, unique=True),
)
ROLE_TABLES = {"customer": customers, "organizer": organizers, "administrator": administrators}

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("token_hash", Text, nullable=False, unique=True),  # sha256 of the opaque token
    Column("user_id", ForeignKey("users.user_id"), nullable=False, index=True),
    # Every token a login started shares its chain; reuse of a rotated one revokes them all.
    Column("chain_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", Text, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Emailed single-use tokens: purpose "verify_email" (24 h) or "reset_password" (1 h).
mailed_tokens = Table(
    "mailed_tokens",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("purpose", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("user_id", ForeignKey("users.user_id"), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("superseded_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("mailed_tokens_user_purpose", "user_id", "purpose"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("action", Text, nullable=False),
    Column("actor_user_id", Integer),
    Column("target_user_id", Integer, nullable=False),
    Column("jti", Text),  # the token issued for the target, when one was
    Column("request_id", Text),
    Column("details", JSONB),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
