"""Idempotency-Key (API.md §1.6), reusable by every service that takes the header.

Per (user, method, path, key) a row keeps the request's fingerprint, whether it is still
running, and its final answer. A repeat of the same request gets the stored answer with no
second effect; a different request under the same key, or a repeat while the first is still
running, gets a 409. Only answers that describe the outcome of the request are stored
(200/400/402/404/409, for 24 h); 401/403/422/429/5xx are not, so the client may retry.
The claim is one conditional statement, so it holds across any number of instances.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

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
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert

from contracts.codec import encode
from services.kernel.db import Database
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
    digest.update("&".join(sorted(f"{k}={v}" for k, v in request.query_params.items())).encode())
    digest.update(b"\0" + await request.body())
    return digest.hexdigest()


class IdempotencyKeys:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = idempotency_table(db.metadata)

    def _scope(self, user_id: int, method: str, path: str, key: str) -> list[Any]:
        t = self.table
        return [t.c.user_id == user_id, t.c.method == method, t.c.path == path, t.c.key == key]

    async def claim(
        self, user_id: int, method: str, path: str, key: str, print_: str
    ) -> tuple[int, bytes] | None:
        """None when this request now owns the key; the stored answer when it was answered;
        raises 409 when the key is busy or belongs to another request."""
        t = self.table
        stmt = insert(t).values(
            user_id=user_id, method=method, path=path, key=key, fingerprint=print_,
            state="in_progress",
        )  # fmt: skip
        expired = text(f"now() - interval '{int(KEEP_FOR.total_seconds())} seconds'")
        stale = text(f"now() - interval '{int(STALE_AFTER.total_seconds())} seconds'")
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.user_id, t.c.method, t.c.path, t.c.key],
            set_={
                "fingerprint": print_,
                "state": "in_progress",
                "status_code": None,
                "body": None,
                "created_at": text("now()"),
            },
            where=(t.c.created_at < expired)
            | ((t.c.state == "in_progress") & (t.c.created_at < stale)),
        )
        # One statement each, outside a transaction block: no BEGIN/COMMIT round trips (the
        # claim is a single conditional statement either way).
        async with self.db.autocommit.connect() as conn:
            if (await conn.execute(stmt.returning(t.c.key))).first() is not None:
                return None
            row = (
                await conn.execute(select(t).where(*self._scope(user_id, method, path, key)))
            ).one()
        if row.fingerprint != print_:
            raise Conflict(REUSED)
        if row.state == "in_progress":
            raise Conflict(IN_PROGRESS)
        return int(row.status_code), bytes(row.body)

    async def finish(
        self, user_id: int, method: str, path: str, key: str, status: int, body: bytes
    ) -> None:
        """Store the answer, or free the key when this kind of answer is not kept."""
        t = self.table
        scope = self._scope(user_id, method, path, key)
        async with self.db.autocommit.connect() as conn:
            if status in STORED_STATUSES:
                await conn.execute(
                    update(t).where(*scope).values(state="done", status_code=status, body=body)
                )
            else:
                await conn.execute(delete(t).where(*scope))


async def idempotent(
    request: Request, db: Database, user_id: int, produce: Callable[[], Awaitable[Any]]
) -> Response[Any]:
    """Run `produce` (whose result is the 200 body) at most once per Idempotency-Key."""
    key = header_key(request)
    if key is None:
        return Response(await produce(), status_code=200)
    keys = IdempotencyKeys(db)
    method, path = request.method, request.url.path.rstrip("/") or "/"
    stored = await keys.claim(user_id, method, path, key, await fingerprint(request))
    if stored is not None:
        return Response(stored[1], status_code=stored[0], media_type="application/json")
    try:
        body = encode(await produce())
    except DomainError as exc:
        await keys.finish(
            user_id, method, path, key, exc.status_code, encode({"detail": exc.detail})
        )
        raise
    except BaseException:
        await keys.finish(user_id, method, path, key, 500, b"")
        raise
    await keys.finish(user_id, method, path, key, 200, body)
    return Response(body, status_code=200, media_type="application/json")
