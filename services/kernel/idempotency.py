"""Idempotency-Key (API.md §1.6), reusable by every service that takes the header.

Per (user, method, path, key) a row keeps the request's fingerprint, whether it is still
running, and its final answer. A repeat of the same request gets the stored answer with no
second effect; a different request under the same key, or a repeat while the first is still
running, gets a 409. Only answers that describe the outcome of the request are stored
(200/400/402/404/409, for 24 h); 401/403/422/429/5xx are not, so the client may retry.
The claim is one conditional statement, so it holds across any number of instances.

A request whose effect is one transaction stores its 200 answer in that transaction's COMMIT
(`answer_with_commit`): the answer is kept if and only if the effect is, and a retry after a
crash between the two finds it instead of a key left in progress.

A request may also claim its key inside the transaction of its first effect (`idempotent(...,
claim_with_effect=True)` and `claim_in`): a round trip and a transaction less. The key is
then held if and only if that transaction commits; a key held or answered before makes the
claim fail at once, and the request falls back to the claim above (so it answers as if it had
claimed first).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import asyncpg
from litestar import Request, Response
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)

from contracts.codec import encode
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import Conflict, DomainError, RequestValidationError

HEADER = "idempotency-key"
STORED_STATUSES = frozenset({200, 400, 402, 404, 409})
KEEP_FOR = timedelta(hours=24)
# A claim older than this whose request never finished (its process died) may be taken over.
STALE_AFTER = timedelta(minutes=2)
REUSED = "Idempotency-Key reused with a different request"
IN_PROGRESS = "A request with this Idempotency-Key is in progress"


def idempotency_table(metadata: MetaData) -> Table:
    name = f"{metadata.schema}.idempotency_keys"
    if name in metadata.tables:
        return metadata.tables[name]
    return Table(
        "idempotency_keys",
        metadata,
        Column("user_id", BigInteger, primary_key=True),
        Column("method", Text, primary_key=True),
        Column("path", Text, primary_key=True),
        Column("key", Text, primary_key=True),
        Column("fingerprint", Text, nullable=False),
        Column("state", Text, nullable=False),  # in_progress | done
        Column("status_code", Integer),
        Column("body", LargeBinary),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )


def header_key(request: Request) -> str | None:
    """The request's key, validated: 1–255 printable ASCII characters (else 422)."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not 1 <= len(raw) <= 255 or not all(" " <= c <= "~" for c in raw):
        raise RequestValidationError.single(
            ["header", "Idempotency-Key"],
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            "value_error",
        )
    return raw


async def fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.url.path.rstrip("/").encode() + b"\0")
    # In key order, a repeated key's values in the order sent: the first is the one read, so
    # `?q=1&q=5` and `?q=5&q=1` are different requests.
    params = sorted(request.query_params.items(), key=lambda kv: kv[0])
    digest.update("&".join(f"{k}={v}" for k, v in params).encode())
    digest.update(b"\0" + await request.body())
    return digest.hexdigest()


_CLAIM = """
INSERT INTO "{schema}".idempotency_keys AS k (user_id, method, path, key, fingerprint, state)
VALUES ($1, $2, $3, $4, $5, 'in_progress')
ON CONFLICT (user_id, method, path, key) DO UPDATE
  SET fingerprint = EXCLUDED.fingerprint, state = 'in_progress', status_code = NULL,
      body = NULL, created_at = now()
  WHERE k.created_at < now() - make_interval(secs => {keep})
     OR (k.state = 'in_progress' AND k.created_at < now() - make_interval(secs => {stale}))
RETURNING key
"""
# The claim inside the transaction of the request's effect: a row that is new, or a unique
# violation (held, answered, stale or expired: `_CLAIM` decides after the fallback).
_CLAIM_NEW = """
INSERT INTO "{schema}".idempotency_keys (user_id, method, path, key, fingerprint, state)
VALUES ($1, $2, $3, $4, $5, 'in_progress')
"""
# What the key holds when the claim did not take it (a second statement: the claim's snapshot
# may predate the row it conflicted with).
_STORED = """
SELECT fingerprint, state, status_code, body FROM "{schema}".idempotency_keys
WHERE user_id = $1 AND method = $2 AND path = $3 AND key = $4
"""
_STORE = """
UPDATE "{schema}".idempotency_keys SET state = 'done', status_code = $5, body = $6
WHERE user_id = $1 AND method = $2 AND path = $3 AND key = $4
"""
_FREE = """
DELETE FROM "{schema}".idempotency_keys
WHERE user_id = $1 AND method = $2 AND path = $3 AND key = $4
"""
# Freed only while still held by a request whose answer never came (a crashed checkout's).
_FREE_HELD = """
DELETE FROM "{schema}".idempotency_keys
WHERE user_id = $1 AND method = $2 AND path = $3 AND key = $4 AND state = 'in_progress'
"""
# Freed only if it still holds this very answer (not one stored since by another request).
_FREE_ANSWERED = """
DELETE FROM "{schema}".idempotency_keys
WHERE user_id = $1 AND method = $2 AND path = $3 AND key = $4
  AND state = 'done' AND status_code = $5 AND body = $6
"""


@functools.cache
def _statements(schema: str) -> dict[str, str]:
    """The statements for a schema, built once (a request makes its `IdempotencyKeys`)."""
    keep, stale = int(KEEP_FOR.total_seconds()), int(STALE_AFTER.total_seconds())
    return {
        name: sql.format(schema=schema, keep=keep, stale=stale)
        for name, sql in (
            ("claim", _CLAIM),
            ("claim_new", _CLAIM_NEW),
            ("stored", _STORED),
            ("store", _STORE),
            ("free", _FREE),
            ("free_held", _FREE_HELD),
            ("free_answered", _FREE_ANSWERED),
        )
    }


class IdempotencyKeys:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.sql = _statements(db.schema)

    async def claim(
        self, user_id: int, method: str, path: str, key: str, print_: str
    ) -> tuple[int, bytes] | None:
        """None when this request now owns the key; the stored answer when it was answered;
        raises 409 when the key is busy or belongs to another request."""
        # One statement each, outside a transaction block: no BEGIN/COMMIT round trips (the
        # claim is a single conditional statement either way).
        scope = (user_id, method, path, key)
        async with self.db.driver() as db:
            if await db.fetchrow(self.sql["claim"], *scope, print_) is not None:
                return None
            row = await db.fetchrow(self.sql["stored"], *scope)
        if row is None:  # freed between the two statements: the request may simply retry
            raise Conflict(IN_PROGRESS)
        if row.fingerprint != print_:
            raise Conflict(REUSED)
        if row.state == "in_progress":
            raise Conflict(IN_PROGRESS)
        return int(row.status_code), bytes(row.body)

    async def free_answered(
        self, user_id: int, method: str, path: str, key: str, answer: tuple[int, bytes]
    ) -> None:
        """Free the key if it still holds `answer` (a 202 a follower found superseded by an
        answer that is not kept); a claim or an answer stored since is left alone."""
        async with self.db.driver() as db:
            await db.fetchval(self.sql["free_answered"], user_id, method, path, key, *answer)

    async def finish(
        self,
        user_id: int,
        method: str,
        path: str,
        key: str,
        status: int,
        body: bytes,
        kept: frozenset[int] = STORED_STATUSES,
    ) -> None:
        """Store the answer, or free the key when this kind of answer is not kept."""
        scope = (user_id, method, path, key)
        async with self.db.driver() as db:
            if status in kept:
                await db.fetchval(self.sql["store"], *scope, status, body)
            else:
                await db.fetchval(self.sql["free"], *scope)


class _Claim:
    """The key the running request holds (or will hold once the transaction of its effect
    commits, when `deferred`), and the units of work that claim it and store its answer."""

    __slots__ = ("claimed_in", "deferred", "handed_over", "print_", "scope", "uow")

    def __init__(self, scope: tuple[int, str, str, str], print_: str, deferred: bool) -> None:
        self.scope = scope
        self.print_ = print_
        self.deferred = deferred
        self.claimed_in: UnitOfWork | None = None
        self.uow: UnitOfWork | None = None
        # The key was recorded with an effect that outlives the request (`running_key`).
        self.handed_over = False

    @property
    def held(self) -> bool:
        return not self.deferred or (self.claimed_in is not None and self.claimed_in.committed)

    @property
    def left_to_settle(self) -> bool:
        """Held, and recorded with an effect that outlives the request: whoever settles that
        effect answers the key (a checkout's crash recovery)."""
        return self.held and self.handed_over

    @property
    def answered(self) -> bool:
        return self.uow is not None and self.uow.committed


_claim: ContextVar[_Claim | None] = ContextVar("idempotency_claim", default=None)


@contextmanager
def claimed(
    scope: tuple[int, str, str, str], print_: str = "", deferred: bool = False
) -> Iterator[_Claim]:
    """While the block runs, the request holds the key of `scope` (user, method, path, key),
    or claims it with its effect (`deferred`, `claim_in`): a unit of work in it may store the
    answer (`answer_with_commit`)."""
    claim = _Claim(scope, print_, deferred)
    token = _claim.set(claim)
    try:
        yield claim
    finally:
        _claim.reset(token)


async def claim_in(uow: UnitOfWork) -> None:
    """Where the running request claims its key with its effect and does not hold it yet: the
    claim is `uow`'s first statement, sent with its BEGIN. Nothing to do otherwise."""
    claim = _claim.get()
    if claim is None or claim.held:
        return
    await uow.begin_with(_statements(uow.db.schema)["claim_new"], *claim.scope, claim.print_)
    claim.claimed_in = uow


def running_key() -> tuple[str, str] | None:
    """The path and Idempotency-Key of the running request, if it sent one, for an effect that
    outlives the request to record: whoever settles that effect answers the key. From now on
    an error of unknown outcome (not a domain error) leaves the key held."""
    claim = _claim.get()
    if claim is None:
        return None
    claim.handed_over = True
    return claim.scope[2], claim.scope[3]


async def free_with_commit(uow: UnitOfWork, scope: tuple[int, str, str, str]) -> None:
    """The key of `scope` freed in `uow`'s COMMIT if a request that never answered still holds
    it: its effect failed, so a retry is a new attempt (as after any answer that is not kept)."""
    await uow.at_commit(_statements(uow.db.schema)["free_held"], *scope)


async def answer_with_commit(uow: UnitOfWork, body: Any) -> None:
    """`body` is the running request's 200 answer if `uow` commits: stored in its COMMIT's
    message (an answer is never a secret). Nothing to do outside a request with a key."""
    claim = _claim.get()
    if claim is None:
        return
    await uow.at_commit(_statements(uow.db.schema)["store"], *claim.scope, 200, encode(body))
    claim.uow = uow


def _held_before(exc: asyncpg.UniqueViolationError, keys: IdempotencyKeys) -> bool:
    return exc.constraint_name == "idempotency_keys_pkey" and exc.schema_name == keys.db.schema


async def idempotent(
    request: Request,
    db: Database,
    user_id: int,
    produce: Callable[[], Awaitable[Any]],
    *,
    claim_with_effect: bool = False,
) -> Response[Any]:
    """Run `produce` (whose result is the 200 body) at most once per Idempotency-Key. With
    `claim_with_effect`, the transaction of its first effect claims the key (`claim_in`)."""
    key = header_key(request)
    if key is None:
        return Response(await produce(), status_code=200)
    keys = IdempotencyKeys(db)
    method, path = request.method, request.url.path.rstrip("/") or "/"
    scope = (user_id, method, path, key)
    print_ = await fingerprint(request)
    if claim_with_effect:
        try:
            return await _produce(keys, scope, print_, produce, deferred=True)
        except asyncpg.UniqueViolationError as exc:
            if not _held_before(exc, keys):
                raise
    stored = await keys.claim(*scope, print_)
    if stored is not None:
        return _stored(stored)
    return await _produce(keys, scope, print_, produce, deferred=False)


def _stored(stored: tuple[int, bytes]) -> Response[Any]:
    return Response(stored[1], status_code=stored[0], media_type="application/json")


async def _produce(
    keys: IdempotencyKeys,
    scope: tuple[int, str, str, str],
    print_: str,
    produce: Callable[[], Awaitable[Any]],
    deferred: bool,
) -> Response[Any]:
    with claimed(scope, print_, deferred) as claim:
        try:
            body = encode(await produce())
        except Exception as exc:
            if isinstance(exc, asyncpg.UniqueViolationError) and _held_before(exc, keys):
                raise  # the claim with the effect failed: `idempotent` claims on its own
            if not claim.held:
                # Nothing was done (the claim goes with the first effect): answer as if the
                # key had been claimed first.
                if (stored := await keys.claim(*scope, print_)) is not None:
                    return _stored(stored)
            failed = exc if isinstance(exc, DomainError) else None
            # Unless the effect and its answer were committed (they stand), or its outcome is
            # unknown and left to what settles the effect: a request cut off (a shutdown past
            # its grace) or failed after its key went with an effect that outlives it keeps
            # the key held, as if its process had died, until that effect's settling answers
            # it (a checkout's crash recovery) or it goes stale.
            if not claim.answered and (failed or not claim.left_to_settle):
                await keys.finish(
                    *scope,
                    failed.status_code if failed else 500,
                    encode({"detail": failed.detail}) if failed else b"",
                )
            raise
        except BaseException:
            if claim.held and not claim.answered and not claim.left_to_settle:
                await keys.finish(*scope, 500, b"")
            raise
    if not claim.held:
        raise RuntimeError("a request that claims its key with its effect never claimed it")
    if not claim.answered:
        await keys.finish(*scope, 200, body)
    return Response(body, status_code=200, media_type="application/json")
