"""The app factory every service uses: runtime wiring, health, metrics, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import msgspec
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, FromQuery
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import MetaData, func, select

from services.kernel import broker, context, metrics
from services.kernel.answers import AnswerCache, ChangeFeed, answer_key
from services.kernel.catchup import CatchUp
from services.kernel.consumer import Consumer, Handler
from services.kernel.db import Database, DatabaseUnavailable, UnitOfWork, is_unavailable
from services.kernel.errors import DomainError, NotFound, RequestValidationError
from services.kernel.mail import MailSender, SmtpSettings
from services.kernel.migrate import schema_behind
from services.kernel.notifications import Notifications
from services.kernel.openapi import describe_requests
from services.kernel.relay import Relay, consumed_types
from services.kernel.settings import Settings
from services.kernel.tokens import TokenVerifier
from services.kernel.upstream import UpstreamError, Upstreams
from services.kernel.validation import parse_json
from services.topology import subscriptions

log = logging.getLogger("resellio.app")
MAX_BODY_BYTES = 1024 * 1024
_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


def valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value) <= 128 and all(c in _REQUEST_ID_OK for c in value)  # type: ignore[arg-type]


@dataclass
class Runtime:
    """Everything a service's handlers use, built once at start-up."""

    service: str
    settings: Settings
    db: Database
    http: httpx.AsyncClient
    verifier: TokenVerifier
    catch_up: CatchUp
    names: broker.Names
    connection: AbstractRobustConnection | None = None
    exchange: AbstractExchange | None = None
    relay: Relay | None = None
    consumer: Consumer | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    schema_migrated: bool = False  # seen at this code's version once: stays so

    async def broker_ok(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def schema_ok(self) -> bool:
        """The service's schema migrated to this code's head (or past it, by a later release):
        a new release's instance is not ready until its migrations have run, so a rolling
        update keeps the old instances serving meanwhile. Once ready, it stays so."""
        if not self.schema_migrated:
            async with self.db.engine.connect() as conn:
                behind = await schema_behind(conn, self.service, self.db.schema)
            self.schema_migrated = not behind
        return self.schema_migrated


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


# ---- error mapping (one place) ----------------------------------------------------------


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(
        body, status_code=status, headers=dict(headers or {}), media_type="application/json"
    )


def _domain_error(_: Request, exc: DomainError) -> Response[Any]:
    return _json(exc.status_code, {"detail": exc.detail}, exc.headers)


def _validation_error(_: Request, exc: RequestValidationError) -> Response[Any]:
    return _json(422, {"detail": exc.errors})


def _litestar_validation(_: Request, exc: ValidationException) -> Response[Any]:
    errors = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            errors.append(
                {
                    "loc": [item.get("source") or "body", item.get("key") or ""],
                    "msg": item.get("message", "Invalid value"),
                    "type": "value_error",
                }
            )
    if not errors:
        errors = [{"loc": ["body"], "msg": str(exc.detail), "type": "value_error"}]
    return _json(422, {"detail": errors})


_HTTP_DETAILS = {404: "Not Found", 405: "Method Not Allowed", 413: "Request body too large"}


def _http_error(_: Request, exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return _json(500, {"detail": "Internal server error"})
    detail = _HTTP_DETAILS.get(exc.status_code, exc.detail)
    if exc.status_code == 400 and "JSON" in str(exc.detail):
        return _json(
            422, {"detail": [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]}
        )
    return _json(exc.status_code, {"detail": detail}, exc.headers)


def _unavailable(_: Request, exc: Exception) -> Response[Any]:
    log.warning("dependency unavailable: %s", exc)
    return _json(503, {"detail": "Service unavailable"})


def _internal_error(request: Request, exc: Exception) -> Response[Any]:
    if is_unavailable(exc) or isinstance(exc, TimeoutError):
        return _unavailable(request, exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, {"detail": "Internal server error"})


EXCEPTION_HANDLERS: dict[Any, Callable[..., Response[Any]]] = {
    DomainError: _domain_error,
    RequestValidationError: _validation_error,
    ValidationException: _litestar_validation,
    HTTPException: _http_error,
    DatabaseUnavailable: _unavailable,
    Exception: _internal_error,
}


# ---- request context middleware ----------------------------------------------------------


def _request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is acceptable, else a new one."""
    return incoming if incoming is not None and valid_request_id(incoming) else str(uuid.uuid4())


def _observe(service: str, method: str, route: str, status: int, started: float) -> None:
    """A request answered: counted, and its latency since `started` (time.perf_counter)."""
    metrics.child(metrics.http_requests, service, method, route, str(status)).inc()
    metrics.child(metrics.http_latency, service, method, route).observe(
        time.perf_counter() - started
    )


def request_context_middleware(service: str) -> Callable[[ASGIApp], ASGIApp]:
    """Keeps or makes X-Request-ID, binds it to logs and events, records metrics."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            incoming = None
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    incoming = value.decode("latin-1")
                    break
            request_id = _request_id(incoming)
            token = context.correlation_id.set(request_id)
            started = time.perf_counter()
            status = 500

            async def send_with_id(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ]
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                route = scope.get("path_template") or "unmatched"
                _observe(service, scope["method"], route, status, started)
                context.correlation_id.reset(token)

        return handle

    return middleware


class AnsweredFromMemory:
    """A service's ASGI entry (`served`): a GET without credentials whose answer is remembered
    for such requests (`AnswerCache.for_anyone`) is answered here, before routing, with the
    headers the handler's answer had and the request id; anything else goes to the app. The
    event listing and the parts of the event page, which every visitor asks for, cost about
    half their CPU this way (catalog's remembered listing: 0.36 -> 0.19 ms)."""

    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            rt: Runtime | None = getattr(self.app.state, "runtime", None)  # None until started
            cache = rt.extras.get("answers") if rt is not None else None
            if cache is not None and await self._answered(rt, cache, scope, send):
                return
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] == "http":
                await _cut_off(scope, send)
            raise

    @staticmethod
    async def _answered(rt: Any, cache: AnswerCache, scope: Scope, send: Send) -> bool:
        incoming = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return False
            if name == b"x-request-id" and incoming is None:  # the first, as the middleware
                incoming = value.decode("latin-1")
        started = time.perf_counter()
        answer = cache.for_anyone(answer_key(scope))
        if answer is None:
            return False
        request_id = _request_id(incoming)
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer.body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        _observe(rt.service, "GET", answer.route or "unmatched", 200, started)
        return True


_CUT_OFF = msgspec.json.encode({"detail": "Service unavailable"})


async def _cut_off(scope: Scope, send: Send) -> None:
    """A request cut off by a shutdown that outlasted its grace: a 503 the client may retry
    (the server's own answer would be a plain-text 500), unless its answer had begun."""
    incoming = next(
        (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
    )
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_CUT_OFF)).encode()),
                    (b"x-request-id", _request_id(incoming).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _CUT_OFF})
    except Exception:  # its answer had begun: the server closes the connection
        pass


def served(app: Any) -> Any:
    """What the server runs for an app: a service's app behind `AnsweredFromMemory` (it does
    nothing for one that remembers no answers), anything else as it is."""
    return AnsweredFromMemory(app) if isinstance(app, Litestar) else app


# ---- the factory ------------------------------------------------------------------------


@get("/health", include_in_schema=False, sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", include_in_schema=False)
async def ready(request: Request) -> Response[dict[str, str]]:
    rt = runtime(request)
    checks = {"database": "ok", "broker": "ok" if await rt.broker_ok() else "unreachable"}
    try:
        await asyncio.wait_for(rt.db.ping(), 1.5)
    except Exception:
        checks["database"] = "unreachable"
    else:
        try:
            migrated = await asyncio.wait_for(rt.schema_ok(), 1.0)
        except Exception:
            checks["schema"] = "unknown"
        else:
            checks["schema"] = "ok" if migrated else "migrating"
    ok = all(v == "ok" for v in checks.values())
    return Response(checks, status_code=200 if ok else 503)


async def _schema_migrated(rt: Runtime) -> None:
    """Before any background work (the relay, the consumer, the mail sender) and before the
    server answers: wait while the service's schema is known to be behind this code's version,
    so that an instance of a new release started beside its migrations applies no event to the
    old schema. The database unreachable says nothing: the start goes on, as it always has."""
    waited = False
    while True:
        try:
            if await rt.schema_ok():
                return
        except Exception as exc:
            if is_unavailable(exc):
                return
            raise
        if not waited:
            log.warning("%s: waiting for its schema to be migrated to this version", rt.service)
            waited = True
        await asyncio.sleep(1.0)


async def _sample_gauges(rt: Runtime) -> None:
    """Gauges are read when Prometheus scrapes: the outbox backlog, the dead-letter depth, and
    whatever the service adds (ordering: holds in force)."""
    async with rt.db.engine.connect() as conn:
        backlog = await conn.scalar(
            select(func.count())
            .select_from(rt.db.outbox)
            .where(rt.db.outbox.c.published_at.is_(None))
        )
    metrics.outbox_backlog.labels(rt.service).set(backlog or 0)
    if rt.consumer is not None and rt.connection is not None:
        channel = await rt.connection.channel()
        try:
            queue = await channel.declare_queue(
                rt.names.dead_letter_queue(rt.service), passive=True
            )
            metrics.dead_letter_depth.labels(rt.service).set(queue.declaration_result.message_count)
        finally:
            await channel.close()
    sampler = rt.extras.get("gauges")
    if sampler is not None:
        await sampler(rt)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response[bytes]:
    try:
        await asyncio.wait_for(_sample_gauges(runtime(request)), 2.0)
    except Exception as exc:  # a scrape still answers with what it has
        log.warning("could not sample gauges: %s", exc)
    body, content_type = metrics.render()
    # Litestar appends the charset to a text/ type itself: given once more, the header would
    # carry it twice, which a strict scraper refuses.
    return Response(body, media_type=content_type.replace("; charset=utf-8", ""))


@get("/internal/events/head", include_in_schema=False)
async def events_head(request: Request, types: FromQuery[str] = "") -> dict[str, Any]:
    """The newest committed event of these types (published or not), and the others of them
    published in the last RECENT_S seconds or not yet: what a consumer waits for to read its
    own writes (services.kernel.catchup). The consumer applies several batches at once, so
    the newest may be applied before an older one."""
    db = runtime(request).db
    wanted = [t for t in types.split(",") if t]
    async with db.driver() as conn:
        row = await conn.fetchrow(_HEAD_SQL.format(schema=db.schema), wanted, RECENT_S)
    newest = row["event_id"] if row is not None else None
    return {
        "event_id": str(newest) if newest else None,
        "recent": [str(e) for e in (row["recent"] if row is not None else []) if e != newest],
    }


WRITTEN_MAX = 1000  # events named in one catch-up request; beyond, every committed one


class Written(msgspec.Struct, frozen=True):
    """What a producer just committed: its events' ids and types."""

    events: Annotated[list[tuple[uuid.UUID, str]], msgspec.Meta(max_length=WRITTEN_MAX)] = []


@post("/internal/catch-up/{producer:str}", include_in_schema=False, status_code=200)
async def catch_up_with(request: Request, producer: FromPath[str]) -> dict[str, bool]:
    """Wait (bounded) until the producer's events named in the body (those this service
    consumes) are handled here, or with no body every event it had committed when asked: a
    producer's write that this service's answers rest on, applied here before the producer
    answers it (catalog's price changes and cancellations, API.md §1.8)."""
    rt = runtime(request)
    if not rt.catch_up.follows(producer):
        raise NotFound(f"Not following {producer}")
    written = parse_json(await request.body(), Written, empty_ok=True)
    if written.events:
        return {"caught_up": await rt.catch_up.handled(written.events)}
    return {"caught_up": await rt.catch_up(producer)}


async def applied_by(rt: Runtime, uow: UnitOfWork, consumers: Sequence[str] | None = None) -> None:
    """After a unit of work committed, before its change is answered: wait (bounded) until
    these services (by default every one that consumes an event it wrote) have applied its
    events, so that their next answers show it (API.md §1.8), at the cost of this rare write
    rather than of every read. A consumer unreachable or slow is logged; the change stands."""
    if not uow.written:
        return
    if consumers is None:
        types = {event_type for _, event_type in uow.written}
        consumers = [
            service
            for service, handled in subscriptions().items()
            if service != rt.service and types.intersection(handled)
        ]
    events = [[str(event_id), event_type] for event_id, event_type in uow.written]
    # More than a request names (a venue of a thousand events renamed): every event this
    # producer had committed by then, which includes them.
    written = {"events": events} if len(events) <= WRITTEN_MAX else {}
    target = f"/internal/catch-up/{rt.service}"
    timeout = rt.settings.catch_up_timeout_s + 1.0

    async def applied_by_one(service: str) -> None:
        try:
            answer = await rt.catch_up.upstreams.post_json(service, target, written, timeout)
        except UpstreamError as exc:
            log.warning("%s did not confirm %s's change: %s", service, rt.service, exc)
            return
        if not answer.get("caught_up"):
            log.warning("%s had not applied %s's change in time", service, rt.service)

    await asyncio.gather(*(applied_by_one(service) for service in consumers))


# Asked before every read that catches up (a marketplace page, say), so one prepared
# statement on the driver, and the newest event of each type found by its own index probe
# (outbox_type_id: type, id) rather than a walk back through the whole outbox.
# The recent ones: among the 256 ids before the newest of those types, up to 32 of each type,
# published in the last $2 seconds or not yet (one that failed at the consumer and waits for a
# retry, or was dead-lettered, is waited for no longer than that).
RECENT_S = 5.0
_HEAD_SQL = """
WITH newest AS (
  SELECT o.id, o.event_id FROM unnest($1::text[]) AS wanted(type)
  CROSS JOIN LATERAL (
    SELECT id, event_id FROM "{schema}".outbox WHERE type = wanted.type ORDER BY id DESC LIMIT 1
  ) AS o
  ORDER BY o.id DESC LIMIT 1
)
SELECT newest.event_id, ARRAY(
  SELECT r.event_id FROM unnest($1::text[]) AS wanted(type)
  CROSS JOIN LATERAL (
    SELECT event_id FROM "{schema}".outbox
    WHERE type = wanted.type AND id > newest.id - 256
      AND (published_at IS NULL OR published_at > now() - make_interval(secs => $2))
    ORDER BY id DESC LIMIT 32
  ) AS r
) AS recent
FROM newest
"""


StartHook = Callable[[Runtime], Awaitable[None]]


def create_service_app(
    *,
    service: str,
    settings: Settings,
    metadata: MetaData,
    route_handlers: Sequence[Any],
    handlers: Mapping[str, Handler] | None = None,
    topology: Mapping[str, Sequence[str]],
    jwks_source: Callable[[Runtime], Callable[[], Awaitable[dict[str, Any]]]] | None = None,
    on_startup: Sequence[StartHook] = (),
    queue_type: str | None = None,
    sends_mail: bool = False,
    caches_answers: bool = False,
) -> Litestar:
    """Build a service. Nothing connects at import or construction; the lifespan does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(
            settings.database_url_for(service),
            service,
            metadata,
            settings.db_pool_size_for(service),
        )
        http = httpx.AsyncClient(
            timeout=5.0, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        # The catch-up's questions to other services (a hot path: see services/kernel/upstream.py).
        upstreams = Upstreams(
            {name: settings.urls_of(name) for name in settings.service_urls},
            connect_timeout_s=1.0,
            timeout_s=settings.catch_up_timeout_s,
            max_connections=64,
            max_idle=16,
        )
        names = broker.Names(settings.broker_prefix)

        async def remote_jwks() -> dict[str, Any]:
            response = await http.get(f"{settings.url_of('auth')}/api/auth/.well-known/jwks.json")
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

        subscribed = list(topology.get(service, ()))
        rt = Runtime(
            service=service,
            settings=settings,
            db=db,
            http=http,
            verifier=TokenVerifier(remote_jwks, settings.jwt_issuer, settings.jwt_audience),
            catch_up=CatchUp(db, upstreams, subscribed, settings.catch_up_timeout_s),
            names=names,
        )
        if jwks_source is not None:
            rt.verifier = TokenVerifier(jwks_source(rt), settings.jwt_issuer, settings.jwt_audience)
        app.state.runtime = rt
        rt.connection = await broker.connect(settings.amqp_url)
        publish_channel: AbstractChannel = await rt.connection.channel(publisher_confirms=True)
        await broker.declare_topology(
            publish_channel,
            names,
            topology,
            settings.consumer_retry_delays_ms,
            queue_type or os.environ.get("RESELLIO_QUEUE_TYPE", "quorum"),
        )
        rt.exchange = await broker.declare_exchange(publish_channel, names)

        async def exchange() -> AbstractExchange:
            assert rt.exchange is not None
            return rt.exchange

        await _schema_migrated(rt)
        notifications = Notifications(db)
        if caches_answers and settings.answer_cache:
            feed = ChangeFeed(db)
            feed.follow(notifications)
            db.on_committed = feed.changed
            rt.catch_up.on_newly_handled = feed.changed
            rt.extras["answers"] = AnswerCache(feed)
        rt.tasks.append(asyncio.create_task(notifications.run(), name=f"{service}-listen"))
        if settings.relay_inline:
            rt.relay = Relay(
                db,
                exchange,
                service,
                consumed=consumed_types(topology),
                notifications=notifications,
                batch_interval=settings.relay_batch_interval_ms / 1000,
            )
            rt.tasks.append(asyncio.create_task(rt.relay.run(), name=f"{service}-relay"))
        if handlers:
            rt.consumer = Consumer(service, db, names, handlers, settings.consumer_retry_delays_ms)
            consume_channel = await rt.connection.channel(publisher_confirms=True)
            await rt.consumer.start(consume_channel)
        if sends_mail:
            sender = MailSender(db, SmtpSettings.from_env(dict(os.environ)))
            rt.extras["mail_sender"] = sender
            rt.tasks.append(asyncio.create_task(sender.run(), name=f"{service}-mail"))
        for hook in on_startup:
            await hook(rt)
        try:
            yield
        finally:
            if rt.consumer is not None:
                await rt.consumer.stop()
            for task in rt.tasks:
                task.cancel()
            await asyncio.gather(*rt.tasks, return_exceptions=True)
            await rt.connection.close()
            await http.aclose()
            upstreams.close()
            await db.dispose()

    app = Litestar(
        route_handlers=[
            health,
            ready,
            metrics_endpoint,
            events_head,
            catch_up_with,
            *route_handlers,
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_context_middleware(service)],
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
        logging_config=None,
    )
    describe_requests(app)  # the shapes handlers declare with @accepts, in /schema/openapi.json
    return app
