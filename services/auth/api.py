"""HTTP handlers of auth's public, unauthenticated endpoints (API.md §3.1–3.11): thin, they
parse, call the domain, shape the answer. Admin and user endpoints live in api_admin.py and
api_user.py."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from services.auth import api_admin, api_user, domain
from services.auth.responses import ACTIVATED, answer, config_of
from services.auth.schemas import (
    CustomerRegistration,
    EmailRequest,
    LoginForm,
    LogoutRequest,
    OrganizerRegistration,
    PasswordReset,
    RefreshRequest,
    VerifyEmailQuery,
)
from services.kernel.app import runtime
from services.kernel.credentials import FORM, form_fields
from services.kernel.errors import RequestValidationError, Unauthorized
from services.kernel.openapi import accepts
from services.kernel.security import optional_identity
from services.kernel.validation import parse_json, parse_mapping, parse_query


@post("/api/auth/register/customer")
@accepts(body=CustomerRegistration)
async def register_customer(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), CustomerRegistration)
    done = await domain.register(runtime(request), config_of(request), cmd, "customer")
    message = "User registered successfully. Please check your email to activate your account."
    return answer({"message": message, "user_id": done.user.user_id}, 201)


@post("/api/auth/register/organizer")
@accepts(body=OrganizerRegistration)
async def register_organizer(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), OrganizerRegistration)
    rt, config = runtime(request), config_of(request)
    done = await domain.register(rt, config, cmd, "organizer", cmd.company_name)
    assert done.access is not None
    message = "Organizer registered successfully, awaiting administrator verification"
    return answer({"token": done.access.token, "message": message}, 201)


@post("/api/auth/token", status_code=200)
@accepts(form=LoginForm)
async def login(request: Request) -> Response[Any]:
    # Only the url-encoded form (§3.4), read as the gateway read it to count the attempt:
    # anything else is missing its fields (422), as JSON is. An empty field is a missing one,
    # as in the OAuth2 form the clients were built against.
    data: dict[str, str] = {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM:
        data = {k: v for k, v in form_fields(await request.body()).items() if v}
    cmd = parse_mapping(data, LoginForm)
    session = await domain.login(runtime(request), config_of(request), cmd.username, cmd.password)
    if session is None:
        return answer({"token": "", "refresh_token": "", "message": domain.PENDING})
    body = {"token": session.token, "refresh_token": session.refresh_token}
    return answer({**body, "message": "Login successful"})


@post("/api/auth/refresh", status_code=200)
@accepts(body=RefreshRequest)
async def refresh(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), RefreshRequest)
    session = await domain.refresh(runtime(request), config_of(request), cmd.refresh_token)
    body = {"token": session.token, "refresh_token": session.refresh_token}
    return answer({**body, "message": "Token refreshed"})


@post("/api/auth/logout", status_code=200)
@accepts(body=LogoutRequest, body_required=False)
async def logout(request: Request) -> Response[Any]:
    """Always 200: whatever was presented and valid is revoked, the rest ignored."""
    try:
        identity = await optional_identity(request)
    except Unauthorized:
        identity = None
    try:
        body = parse_json(await request.body(), LogoutRequest, empty_ok=True)
        refresh_token = body.refresh_token
    except RequestValidationError:
        refresh_token = None
    await domain.logout(runtime(request), identity, refresh_token)
    return answer({"message": "Logout successful"})


@get("/api/auth/.well-known/jwks.json")
async def jwks(request: Request) -> Response[dict[str, Any]]:
    keyring = runtime(request).extras["keyring"]
    return Response(keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


@get("/api/auth/verify-email")
@accepts(query=VerifyEmailQuery)
async def verify_email(request: Request) -> Response[Any]:
    query = parse_query(request.query_params, VerifyEmailQuery)
    access = await domain.verify_email(runtime(request), query.token)
    return answer({"token": access.token, "message": ACTIVATED})


@post("/api/auth/resend-verification", status_code=200)
@accepts(body=EmailRequest)
async def resend_verification(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), EmailRequest)
    await domain.resend_verification(runtime(request), config_of(request), cmd.email)
    message = (
        "If your account is awaiting email verification, a new verification email has been sent"
    )
    return answer({"message": message})


@post("/api/auth/request-password-reset", status_code=200)
@accepts(body=EmailRequest)
async def request_password_reset(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), EmailRequest)
    domain.request_password_reset(runtime(request), config_of(request), cmd.email)
    message = "If your email is registered, you will receive a password reset link"
    return answer({"message": message})


@post("/api/auth/reset-password", status_code=200)
@accepts(body=PasswordReset)
async def reset_password(request: Request) -> Response[Any]:
    cmd = parse_json(await request.body(), PasswordReset)
    await domain.reset_password(runtime(request), cmd.token, cmd.new_password)
    return answer({"message": "Password has been reset successfully"})


ROUTES = [
    register_customer,
    register_organizer,
    login,
    refresh,
    logout,
    jwks,
    verify_email,
    resend_verification,
    request_password_reset,
    reset_password,
    *api_admin.ROUTES,
    *api_user.ROUTES,
]
