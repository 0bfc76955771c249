"""The `/api` pipeline, in the order API.md fixes: route, rate limits (per IP before anything
else), body size, per-account limits, token (signature, then ban, then revocation), forward."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import msgspec

from gateway.compose import event_page
from gateway.http import ClientGone, Reply, RequestHeaders, peer_of, read_body
from gateway.observe import EVENT_PAGE, UNROUTED
from gateway.ratelimit import Rule, client_ip
from gateway.routes import (
    LOGOUT,
    PASSWORD_CHANGES,
    TOKEN_EXEMPT,
    VERIFY_ORGANIZER,
    ban_target,
    event_page_id,
    service_for,
    without_trailing_slash,
)
from services.kernel.credentials import fold, form_fields, stored_address
from services.kernel.errors import Unauthorized
from services.kernel.tokens import Identity, bearer_token
from services.kernel.upstream import Answer, UpstreamError

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("resellio.gateway")

# Never forwarded: hop-by-hop, and what the gateway sets itself.
_REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"x-request-id",
        b"x-forwarded-for",
    }
)
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-request-id",
        b"date",
        b"server",
    }
)
_TOO_MANY = "Too many requests. Try again later."
# GETs with an effect (API.md §3.8: the emailed link verifies the address, once).
_ACTING_GETS = frozenset({"/api/auth/verify-email"})


# Longer than any address auth would store, even spelt with every character decomposed.
_LONGEST_SPELLING = 4096


def _spelling(body: bytes, source: str) -> str | None:
    """The account a login (form `username`) or a registration/recovery (JSON `email`) names,
    read as auth reads it (services/kernel/credentials.py); None when it can name no
    account: not an address auth takes (every account's was checked so). Such attempts are
    counted per address only, so what the per-account counts keep is bounded by an address's
    length, not by a request body's (a megabyte-long username per attempt, kept 15 minutes)."""
    try:
        if source == "form":
            value = form_fields(body).get("username")
        else:
            document = msgspec.json.decode(body)
            value = document.get("email") if isinstance(document, dict) else None
    except (msgspec.DecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _LONGEST_SPELLING:
        return None
    return stored_address(value)


_SLASHES = re.compile("/{2,}")
_RAW_SLASHES = re.compile(b"/{2,}")


async def _too_many(reply: Reply, wait: int) -> None:
    await reply.json(429, {"detail": _TOO_MANY}, [(b"retry-after", str(wait).encode())])


async def proxy(gw: Gateway, scope: dict, receive: object, reply: Reply, h: RequestHeaders) -> None:
    path = scope["path"]
    raw = scope.get("raw_path") or path.encode()
    if "//" in path:
        # One path, one rule: the services read "//" as "/" (and "%2F" arrives here decoded),
        # so the limits, the routes and what the gateway applies at once read it so too.
        path = _SLASHES.sub("/", path)
        raw = _RAW_SLASHES.sub(b"/", raw)
    if path.endswith("/"):
        path = without_trailing_slash(path)
        raw = raw.rstrip(b"/") or b"/"
    service = service_for(path)
    if service is None:
        reply.route = UNROUTED
        await reply.json(404, {"detail": "Not Found"})
        return
    reply.route = service
    method: str = scope["method"]
    ip = client_ip(peer_of(scope), h.forwarded_for, gw.limiter.proxies)
    rule: Rule | None = gw.limiter.rule(method, path)
    now = time.monotonic()
    if rule is not None and (wait := gw.limiter.hit_ip(rule, ip, now)):
        await _too_many(reply, wait)
        return

    if h.declares_too_large():
        await reply.json(413, {"detail": "Request body too large"})
        return
    try:
        body = await read_body(receive)  # type: ignore[arg-type]
    except ClientGone:
        reply.status = 499  # as counted: closed by the client (nobody to answer, nothing sent)
        return
    if body is None:
        await reply.json(413, {"detail": "Request body too large"})
        return
    email: str | None = None  # the account's key
    spelling = ""
    if rule is not None and rule.email_from in ("form", "json"):
        spelling = _spelling(body, rule.email_from) or ""
        email = fold(spelling) if spelling else None
        if wait := gw.limiter.hit_account(rule, ip, email, now, spelling):
            await _too_many(reply, wait)
            return

    identity: Identity | None = None
    if h.authorization is not None and path not in TOKEN_EXEMPT:
        token = bearer_token(h.authorization.decode("latin-1"))
        if token is None:
            await reply.unauthorized("Not authenticated")
            return
        try:
            identity = await gw.verifier.verify(token)
        except Unauthorized as exc:
            await reply.unauthorized(exc.detail)
            return
        except Exception as exc:  # auth's JWKS unreachable: we cannot tell
            log.warning("gateway: cannot verify tokens: %r", exc)
            await reply.json(503, {"detail": "Service unavailable"})
            return
        if not gw.denylist.loaded:
            # Auth's deny-list has not been read since this gateway started: a banned user's
            # or a revoked token would pass. Closed until it is (it is asked for again).
            await reply.json(503, {"detail": "Service unavailable"})
            return
        refusal = gw.denylist.refusal(identity)
        if refusal is not None:
            if refusal[0] == 401:
                await reply.unauthorized(refusal[1])
            else:
                await reply.json(refusal[0], {"detail": refusal[1]})
            return
        if rule is not None and rule.email_from == "token":
            email = identity.sub.strip().lower()
            if wait := gw.limiter.hit_account(rule, ip, email, now):
                await _too_many(reply, wait)
                return

    headers = [(k, v) for k, v in scope["headers"] if k not in _REQUEST_DROP]
    headers.append((b"x-request-id", reply.request_id))
    headers.append((b"x-forwarded-for", ip.encode()))
    query = scope.get("query_string")
    target = raw + b"?" + query if query else raw
    # HEAD is a GET whose body is not sent (RFC 9110 §9.3.2): the services route GET only. Not
    # for the one GET that changes something (a link scanner's HEAD would use up a one-time
    # verification link): its service answers HEAD 405.
    upstream_method = "GET" if method == "HEAD" and path not in _ACTING_GETS else method
    try:
        if upstream_method == "GET" and (event_id := event_page_id(path)) is not None:
            reply.route = EVENT_PAGE
            answer = await event_page(
                gw.upstreams,
                target,
                event_id,
                headers,
                identity.user_id if identity else None,
                gw.config.part_timeout_s,
            )
        else:
            answer = await gw.upstreams.send(service, upstream_method, target, headers, body)
    except UpstreamError as exc:
        log.warning("gateway: %s unavailable: %s", service, exc)
        gw.traffic.unavailable(service)
        answer = None
    status = answer.status if answer is not None else 503
    if rule is not None and email is not None:
        gw.limiter.settle(rule, email, now, status, spelling)
    if answer is None:
        await reply.json(503, {"detail": "Service unavailable"})
        return
    if status == 200 and method == "POST" and (target_user := ban_target(path)) is not None:
        # Refuse the user's tokens here at once, before auth's event arrives.
        banned, user_id = target_user
        if banned:
            gw.denylist.ban(user_id, time.time())
        else:
            # Tokens from before the ban stay invalid. A second back: this host's clock may
            # run ahead of auth's, and no token was issued while the user was banned.
            gw.denylist.unban(user_id, time.time() - 1)
    elif status == 200 and method == "POST" and path == VERIFY_ORGANIZER:
        gw.denylist.follow_decision(answer.body, time.time() - 1)
    elif status == 200 and method == "POST" and path == LOGOUT and h.authorization is not None:
        await _revoke_presented(gw, h.authorization)
    elif status == 200 and method == "POST" and path in PASSWORD_CHANGES:
        await gw.follower.refresh(gw.config.denylist_refresh_wait_s)
    await _relay(reply, answer, method == "HEAD")


async def _revoke_presented(gw: Gateway, authorization: bytes) -> None:
    """Refuse here at once the access token a logout revoked (API.md §3.6: a valid one),
    before auth's event arrives."""
    token = bearer_token(authorization.decode("latin-1"))
    if token is None:
        return
    try:
        identity = await gw.verifier.verify(token)
    except Exception:  # not a valid token: auth revoked nothing
        return
    gw.denylist.revoke(identity.jti, float(identity.exp))


async def _relay(reply: Reply, answer: Answer, head: bool) -> None:
    headers = [(k, v) for k, v in answer.headers if k not in _RESPONSE_DROP]
    if head:  # the GET's length (its body was read: a composed page's is not its parts')
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await reply.send(answer.status, headers, b"", length=False)
    else:
        await reply.send(answer.status, headers, answer.body)
