"""The blinded review web app (FastAPI): sign-in with a rater token, one item a page, answers saved
as they are given.

What reaches the browser is built only from ItemView/Progress, which carry display-term text and
per-rater positions: no system names, item ids or file names. Every answer route takes the rater
from the session cookie, never from the request, so one rater cannot address another's answers.

Every request that changes state passes, in this order: a body-size limit and an Origin/Referer
check (_RequestGuard, before routing), the session check, a CSRF token check, and only then is the
body parsed and validated. Error responses describe the problem without repeating the input.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from theraloop.io import InputError
from theraloop.review._store import Rater, ReviewStore

SESSION_COOKIE = "theraloop_review_session"
SIGNIN_COOKIE = "theraloop_review_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_MAX_BODY_BYTES = 16 * 1024
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Scripts and styles come only from /static: even if escaping failed somewhere, injected inline
# script would not run. Referrer-Policy same-origin (not no-referrer): with no-referrer, browsers
# send "Origin: null" on the app's own form posts, which the Origin check must refuse.
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_HSTS = "max-age=31536000"


class AnswerIn(BaseModel):
    """One answer in display terms ("A", "B", "tie" or a score); nothing else is accepted."""

    model_config = ConfigDict(extra="forbid")

    criterion: str
    value: str


class AnswersIn(BaseModel):
    """Several answers to one item, saved together or not at all."""

    model_config = ConfigDict(extra="forbid")

    answers: dict[str, str]


class AnswerSaved(BaseModel):
    done: int
    total: int
    item_complete: bool


_SUBMISSION: TypeAdapter[AnswerIn | AnswersIn] = TypeAdapter(AnswerIn | AnswersIn)


class _Auth(NamedTuple):
    rater: Rater
    csrf_token: str


class _NotSignedIn(Exception):
    pass


class _CsrfRefused(Exception):
    pass


def csrf_token_for(session_id: str) -> str:
    """The session's CSRF token: a keyed hash of the session id, so it needs no storage, and only
    whoever holds the (HttpOnly) session cookie, or reads an app page, can know it."""
    return hmac.new(session_id.encode(), b"theraloop-review-csrf", hashlib.sha256).hexdigest()


def _tokens_match(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def _origin_allowed(headers: Any, expected: str) -> bool:
    """Origin must be the app's own; without Origin, Referer decides. "Origin: null" never matches.
    Browsers send Origin on every POST; a request with neither header comes from outside a browser
    (curl, tests) and is left to the CSRF token."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == expected
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return True


def _normalise_origin(origin: str) -> str:
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise InputError(f"public origin must look like https://review.example.org[:port], got {origin!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


class _RequestGuard:
    """ASGI middleware that runs before routing, so before any parsing: refuses a body over
    `max_body_bytes` (by Content-Length without reading it, or as it streams in), and refuses any
    state-changing method whose Origin/Referer is not the app's own origin. The checked body is
    replayed to the app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, public_origin: str | None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.public_origin = public_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["method"] not in _SAFE_METHODS:
            expected = self.public_origin or f"{request.url.scheme}://{request.url.netloc}".lower()
            if not _origin_allowed(request.headers, expected):
                await self._refuse(scope, receive, send, 403, "cross-origin request refused")
                return
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._refuse(scope, receive, send, 413, "request body too large")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._refuse(scope, receive, send, 413, "request body too large")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status_code: int, detail: str) -> None:
        response: Response
        if scope["path"].startswith("/api/"):
            response = JSONResponse({"detail": detail}, status_code=status_code)
        else:
            response = PlainTextResponse(detail, status_code=status_code)
        await response(scope, receive, send)


class SignInThrottle:
    """Backoff for failed sign-ins, per client address, kept in memory.

    The first `free_failures` failures cost nothing; after that each failure blocks the address for
    base_delay * 2**k seconds (k = failures beyond the free ones, capped at max_delay), and attempts
    while blocked are refused without checking the token. A success clears the address; so does
    `forget_after` seconds without a failure. Tokens are 192-bit random values, so this does not make
    guessing feasible either way; it keeps a misbehaving client from hammering the database.
    """

    def __init__(self, free_failures: int = 5, base_delay: float = 1.0, max_delay: float = 300.0,
                 forget_after: float = 3600.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.free_failures, self.base_delay, self.max_delay = free_failures, base_delay, max_delay
        self.forget_after, self.max_clients, self.clock = forget_after, max_clients, clock
        self._failures: dict[str, tuple[int, float, float]] = {}  # client -> (failures, last failure, blocked until)

    def wait(self, client: str) -> float:
        """Seconds this client must wait before the next attempt (0: go ahead)."""
        entry = self._failures.get(client)
        return max(0.0, entry[2] - self.clock()) if entry else 0.0

    def failed(self, client: str) -> None:
        now = self.clock()
        self._failures = {key: entry for key, entry in self._failures.items() if now - entry[1] < self.forget_after}
        if client not in self._failures and len(self._failures) >= self.max_clients:
            del self._failures[min(self._failures, key=lambda key: self._failures[key][1])]
        failures = self._failures.get(client, (0, now, now))[0] + 1
        beyond = failures - self.free_failures
        delay = min(self.max_delay, self.base_delay * 2 ** (beyond - 1)) if beyond > 0 else 0.0
        self._failures[client] = (failures, now, now + delay)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("theraloop.review", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def create_app(db: str | Path, session_hours: float = 12.0, secure_cookies: bool = False, max_sessions: int = 3,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, public_origin: str | None = None,
               throttle: SignInThrottle | None = None) -> FastAPI:
    """The review app for the study in `db`.

    `secure_cookies`: the app is served over HTTPS, so cookies are Secure with the `__Host-` prefix
    (which another port or subdomain cannot set) and responses carry HSTS. `max_sessions`: live
    sign-ins per rater; a new one ends the oldest. `max_body_bytes`: larger request bodies get 413
    unread. `public_origin` (e.g. https://review.example.org): the only origin accepted on
    state-changing requests; by default the request's own scheme and Host.
    """
    if max_sessions < 1 or max_body_bytes < 1 or session_hours <= 0:
        raise InputError("session_hours, max_sessions and max_body_bytes must be positive")
    store = ReviewStore(db)
    study = store.study
    templates = _templates()
    lifetime = _dt.timedelta(hours=session_hours)
    throttle = throttle or SignInThrottle()
    prefix = "__Host-" if secure_cookies else ""
    session_cookie, signin_cookie = prefix + SESSION_COOKIE, prefix + SIGNIN_COOKIE
    app = FastAPI(title="Response review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(packages=[("theraloop.review", "static")]), name="static")
    app.add_middleware(_RequestGuard, max_body_bytes=max_body_bytes,
                       public_origin=_normalise_origin(public_origin) if public_origin else None)

    # Added after the guard, so it wraps it: the guard's refusals carry these headers too.
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        if secure_cookies:
            response.headers["Strict-Transport-Security"] = _HSTS
        if not request.url.path.startswith("/static/"):
            # Keeps answers out of shared-computer caches and stops the browser restoring stale form state.
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(_NotSignedIn)
    async def not_signed_in(request: Request, _exc: _NotSignedIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        return RedirectResponse("/signin", status_code=303)

    @app.exception_handler(_CsrfRefused)
    async def csrf_refused(request: Request, _exc: _CsrfRefused) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "missing or invalid CSRF token; reload the page"}, status_code=403)
        return message("Not saved", "This page has expired or did not come from this site. Reload it and try "
                       "again.", 403, None)

    def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=secure_cookies,
                            path="/")

    def page(name: str, auth: _Auth | None, status_code: int = 200, **context: Any) -> HTMLResponse:
        if auth is not None:
            context.update(rater=auth.rater, csrf_token=auth.csrf_token)
        else:
            context.setdefault("rater", None)
        html = templates.get_template(name).render(study=study, **context)
        return HTMLResponse(html, status_code=status_code)

    def message(title: str, text: str, status_code: int, auth: _Auth | None) -> HTMLResponse:
        return page("message.html", auth, status_code=status_code, title=title, text=text)

    def signin_page(status_code: int = 200, error: str | None = None, nonce: str | None = None) -> HTMLResponse:
        """The sign-in form with a double-submit token: the same random value in a cookie and a
        hidden field (login CSRF). A fresh one unless `nonce` carries the current one over."""
        fresh = nonce is None
        nonce = nonce or secrets.token_urlsafe(32)
        response = page("signin.html", None, status_code=status_code, error=error, csrf_token=nonce)
        if fresh:
            set_cookie(response, signin_cookie, nonce)
        return response

    def authenticate(request: Request) -> _Auth | None:
        session_id = request.cookies.get(session_cookie)
        if not session_id:
            return None
        rater = store.rater_for_session(session_id)
        return _Auth(rater, csrf_token_for(session_id)) if rater is not None else None

    def signed_in(request: Request) -> _Auth:
        auth = authenticate(request)
        if auth is None:
            raise _NotSignedIn
        return auth

    async def signed_in_form(request: Request) -> tuple[_Auth, Any]:
        """The session first, then the form is parsed, then its CSRF token checked."""
        auth = await run_in_threadpool(signed_in, request)
        form = await request.form()
        if not _tokens_match(auth.csrf_token, form.get(CSRF_FIELD)):
            raise _CsrfRefused
        return auth, form

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def next_page(auth: _Auth, after: int = 0) -> str:
        position = store.progress(auth.rater).next_unanswered(after)
        return f"/items/{position}" if position is not None else "/overview"

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        auth = authenticate(request)
        if auth is None:
            return RedirectResponse("/signin", status_code=303)
        return RedirectResponse(next_page(auth), status_code=303)

    @app.get("/signin", include_in_schema=False)
    def signin_form(request: Request) -> Response:
        if authenticate(request) is not None:
            return RedirectResponse("/", status_code=303)
        return signin_page()

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        client = client_of(request)
        wait = throttle.wait(client)
        if wait > 0:
            seconds = math.ceil(wait)
            response = signin_page(429, f"Too many sign-in attempts. Try again in {seconds} seconds.")
            response.headers["Retry-After"] = str(seconds)
            return response
        form = await request.form()
        nonce = request.cookies.get(signin_cookie)
        if not nonce or not _tokens_match(nonce, form.get(CSRF_FIELD)):
            return signin_page(403, "This sign-in form has expired. Please enter your token again.")
        token = form.get("token")
        rater = await run_in_threadpool(store.rater_for_token, token.strip() if isinstance(token, str) else "")
        if rater is None:
            throttle.failed(client)
            await run_in_threadpool(store.record_refused_signin, client)
            # The same answer for every bad token: it says nothing about which raters exist.
            return signin_page(401, "That token was not accepted.", nonce=nonce)
        throttle.succeeded(client)
        session_id = await run_in_threadpool(store.create_session, rater, lifetime, max_sessions, client)
        response = RedirectResponse("/", status_code=303)
        set_cookie(response, session_cookie, session_id, max_age=int(lifetime.total_seconds()))
        response.delete_cookie(signin_cookie, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        await signed_in_form(request)
        await run_in_threadpool(store.end_session, request.cookies[session_cookie], client_of(request))
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(session_cookie, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.get("/overview", include_in_schema=False)
    def overview(request: Request) -> Response:
        auth = signed_in(request)
        return page("overview.html", auth, progress=store.progress(auth.rater))

    @app.get("/items/{position:int}", include_in_schema=False)
    def item_page(request: Request, position: int) -> Response:
        auth = signed_in(request)
        try:
            view = store.view_item(auth.rater, position)
        except LookupError:
            return message("Not found", "There is no item with that number.", 404, auth)
        return page("item.html", auth, view=view, progress=store.progress(auth.rater))

    @app.post("/items/{position:int}", include_in_schema=False)
    async def item_form(request: Request, position: int) -> Response:
        """The no-JavaScript path: the whole form at once, saved whole or not at all, then on to
        the next unanswered item."""
        auth, form = await signed_in_form(request)
        answers = {criterion.key: value for criterion in study.criteria
                   if isinstance(value := form.get(criterion.key), str) and value}
        try:
            if answers:
                await run_in_threadpool(store.save_answers, auth.rater, position, answers)
        except LookupError:
            return message("Not found", "There is no item with that number.", 404, auth)
        except ValueError as exc:
            return message("Answers not saved", f"Nothing on this page was saved: {exc}.", 422, auth)
        return RedirectResponse(await run_in_threadpool(next_page, auth, position), status_code=303)

    @app.post("/api/items/{position:int}/answers", response_model=AnswerSaved)
    async def save_answers(request: Request, position: int) -> Any:
        """One answer {criterion, value} or several {answers: {criterion: value}}, saved together.
        The body is read only once the session and the CSRF header have been checked."""
        auth = await run_in_threadpool(signed_in, request)
        if not _tokens_match(auth.csrf_token, request.headers.get(CSRF_HEADER)):
            raise _CsrfRefused
        try:
            submission = _SUBMISSION.validate_json(await request.body())
        except ValidationError:
            return JSONResponse({"detail": "send {criterion, value} or {answers: {criterion: value}}"},
                                status_code=422)
        answers = {submission.criterion: submission.value} if isinstance(submission, AnswerIn) else submission.answers
        try:
            progress = await run_in_threadpool(store.save_answers, auth.rater, position, answers)
        except LookupError:
            return JSONResponse({"detail": "no such item"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return AnswerSaved(done=progress.done, total=progress.total, item_complete=progress.complete[position - 1])

    return app
