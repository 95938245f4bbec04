"""The blinded review web app (FastAPI): sign-in with a rater token, one item a page, answers saved
as they are given.

What reaches the browser is built only from ItemView/Progress, which carry display-term text and
per-rater positions: no system names, item ids or file names. Every answer route takes the rater
from the session cookie, never from the request, so one rater cannot address another's answers.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from theraloop.review._store import Progress, Rater, ReviewStore

SESSION_COOKIE = "theraloop_review_session"

# Scripts and styles come only from /static: even if escaping failed somewhere, injected inline
# script would not run.
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class AnswerIn(BaseModel):
    """One answer in display terms ("A", "B", "tie" or a score); nothing else is accepted."""

    model_config = ConfigDict(extra="forbid")

    criterion: str
    value: str


class AnswerSaved(BaseModel):
    done: int
    total: int
    item_complete: bool


class _NotSignedIn(Exception):
    pass


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("theraloop.review", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def create_app(db: str | Path, session_hours: float = 12.0, secure_cookies: bool = False) -> FastAPI:
    """The review app for the study in `db`. `secure_cookies` marks the session cookie Secure
    (set it when the app is served over HTTPS)."""
    store = ReviewStore(db)
    study = store.study
    templates = _templates()
    lifetime = _dt.timedelta(hours=session_hours)
    app = FastAPI(title="Response review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(packages=[("theraloop.review", "static")]), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            # Keeps answers out of shared-computer caches and stops the browser restoring stale form state.
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(_NotSignedIn)
    async def not_signed_in(request: Request, _exc: _NotSignedIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        return RedirectResponse("/signin", status_code=303)

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(study=study, **context)
        return HTMLResponse(html, status_code=status_code)

    def message(title: str, text: str, status_code: int, rater: Rater | None) -> HTMLResponse:
        return page("message.html", status_code=status_code, title=title, text=text, rater=rater)

    def optional_rater(request: Request) -> Rater | None:
        return store.rater_for_session(request.cookies.get(SESSION_COOKIE))

    def signed_in_rater(request: Request) -> Rater:
        rater = optional_rater(request)
        if rater is None:
            raise _NotSignedIn
        return rater

    def next_page(progress: Progress, after: int = 0) -> str:
        position = progress.next_unanswered(after)
        return f"/items/{position}" if position is not None else "/overview"

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        rater = optional_rater(request)
        if rater is None:
            return RedirectResponse("/signin", status_code=303)
        return RedirectResponse(next_page(store.progress(rater)), status_code=303)

    @app.get("/signin", include_in_schema=False)
    def signin_form(request: Request) -> Response:
        if optional_rater(request) is not None:
            return RedirectResponse("/", status_code=303)
        return page("signin.html", rater=None, error=None)

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        form = await request.form()
        token = form.get("token")
        rater = await run_in_threadpool(store.rater_for_token, token.strip() if isinstance(token, str) else "")
        if rater is None:
            # The same answer for every bad token: it says nothing about which raters exist.
            return page("signin.html", status_code=401, rater=None, error="That token was not accepted.")
        session_id = await run_in_threadpool(store.create_session, rater, lifetime)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(lifetime.total_seconds()), httponly=True,
                            samesite="strict", secure=secure_cookies, path="/")
        return response

    @app.post("/signout", include_in_schema=False)
    def signout(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            store.end_session(session_id)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.get("/overview", include_in_schema=False)
    def overview(request: Request) -> Response:
        rater = signed_in_rater(request)
        return page("overview.html", rater=rater, progress=store.progress(rater))

    @app.get("/items/{position}", include_in_schema=False)
    def item_page(request: Request, position: int) -> Response:
        rater = signed_in_rater(request)
        try:
            view = store.view_item(rater, position)
        except LookupError:
            return message("Not found", "There is no item with that number.", 404, rater)
        return page("item.html", rater=rater, view=view, progress=store.progress(rater))

    @app.post("/items/{position}", include_in_schema=False)
    async def item_form(request: Request, position: int) -> Response:
        """The no-JavaScript path: the whole form at once, then on to the next unanswered item."""
        rater = await run_in_threadpool(signed_in_rater, request)
        form = await request.form()
        answers = {criterion.key: form.get(criterion.key) for criterion in study.criteria}
        try:
            for criterion, value in answers.items():
                if isinstance(value, str) and value:
                    await run_in_threadpool(store.save_answer, rater, position, criterion, value)
        except LookupError:
            return message("Not found", "There is no item with that number.", 404, rater)
        except ValueError as exc:
            return message("Answer not saved", str(exc), 422, rater)
        progress = await run_in_threadpool(store.progress, rater)
        return RedirectResponse(next_page(progress, after=position), status_code=303)

    @app.post("/api/items/{position}/answers", response_model=AnswerSaved)
    def save_answer(request: Request, position: int, answer: AnswerIn) -> Any:
        rater = signed_in_rater(request)
        try:
            progress = store.save_answer(rater, position, answer.criterion, answer.value)
        except LookupError:
            return JSONResponse({"detail": "no such item"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return AnswerSaved(done=progress.done, total=progress.total, item_complete=progress.complete[position - 1])

    return app
