"""The review app driven in headless Chromium against a real uvicorn server in a subprocess,
including forged posts from pages on another origin and on another port of the same host.

Needs the system Chromium at /usr/bin/chromium (Debian package `chromium`); without it these tests
skip, unless THERALOOP_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from theraloop.review import ReviewStore, load_review_items
from theraloop.rubrics import load_rubric

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SYSTEMS = ("SYSTEM-ALPHA-7", "SYSTEM-BETA-9")
ITEM_FILE = "secret-source-items.jsonl"
XSS_RESPONSE = 'I hear you. <script>window.pwned = 1; alert(1)</script><img src=x onerror="window.pwned = 2">'
ITEMS = [
    {"id": "alpha7-vs-beta9-001", "context": "I haven't slept properly in weeks and I keep crying at work.",
     "response_a": XSS_RESPONSE, "response_b": "Sleep problems are common. Try a routine.",
     "system_a": SYSTEMS[0], "system_b": SYSTEMS[1]},
    {"id": "alpha7-vs-beta9-002", "context": "My partner shouts at me and I don't know what to do.",
     "response_a": "You deserve to feel safe at home. Would it help to talk through your options?",
     "response_b": "Every couple argues sometimes.", "system_a": SYSTEMS[1], "system_b": SYSTEMS[0]},
    {"id": "alpha7-vs-beta9-003", "context": "I failed my exam and feel worthless.",
     "response_a": "Failing an exam hurts, and it says nothing about your worth. What happened?",
     "response_b": "Just try harder next time.", "system_a": SYSTEMS[0], "system_b": SYSTEMS[1]},
]
SECRETS = (*SYSTEMS, *[item["id"] for item in ITEMS], ITEM_FILE, "alpha7")
SAVED = re.compile(r"^(Answer saved|All answers saved)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReviewServer:
    """`theraloop review serve` in a subprocess, so a restart is a real process restart."""

    def __init__(self, db: Path, log: Path):
        self.db, self.log = db, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-c", "from theraloop.review._cli import review_app; review_app()",
                   "serve", "--db", str(self.db), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"review server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/signin", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("review server did not start within 60 s")

    def kill(self) -> None:
        """Stop without any chance to clean up, as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("THERALOOP_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " and THERALOOP_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> ReviewStore:
    folder = tmp_path_factory.mktemp("review-browser")
    items_path = folder / ITEM_FILE
    items_path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    rubric = load_rubric("modpo").subset(["empathy", "safety"])
    return ReviewStore.create(folder / "study.sqlite", load_review_items(items_path, "pairwise"), rubric,
                              "pairwise", seed=21, source={"items_path": str(items_path)})


@pytest.fixture(scope="module")
def server(study, browser):
    review_server = ReviewServer(study.path, study.path.with_suffix(".log"))
    review_server.start()
    yield review_server
    review_server.stop()


def sign_in(browser, server: ReviewServer, token: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/items/\d+$"))
    return context, page


def choose(page, criterion: str, label: str) -> None:
    page.get_by_role("group", name=criterion).get_by_label(label, exact=True).check()
    wait_saved(page)


def wait_saved(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#save-status")).to_have_text(SAVED)
    expect(page.locator("#answers")).to_have_attribute("data-pending", "0")


def checked(page) -> dict[str, str]:
    return page.eval_on_selector_all("input[type=radio]:checked", "inputs => Object.fromEntries("
                                     "inputs.map(input => [input.name, input.value]))")


def assert_blind(text: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), f"{secret!r} reached the browser"


def test_sign_in_answer_by_mouse_and_keyboard_and_reload(browser, server, study):
    from playwright.sync_api import expect

    rater, token = study.add_rater("Dr Mouse")
    context, page = sign_in(browser, server, token)
    assert_blind(page.content())
    cookie = next(c for c in context.cookies() if c["name"] == "theraloop_review_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == "", "the session cookie is invisible to scripts"
    expect(page.get_by_role("heading", name="Response A")).to_be_visible()
    expect(page.get_by_role("heading", name="Response B")).to_be_visible()
    box_a = page.locator("#response-a").bounding_box()
    box_b = page.locator("#response-b").bounding_box()
    assert box_a["x"] + box_a["width"] <= box_b["x"] and abs(box_a["y"] - box_b["y"]) < 2, "side by side"

    position = int(page.url.rsplit("/", 1)[1])
    with page.expect_response(re.compile(r"/api/items/\d+/answers$")) as saved:
        choose(page, "Empathy", "Response B")
    assert saved.value.json() == {"done": 0, "total": 3, "item_complete": False}
    # Keyboard only: focus the first choice, select it with Space, move to the next with an arrow key.
    page.get_by_role("group", name="Safety").get_by_label("Response A", exact=True).focus()
    page.keyboard.press("Space")
    wait_saved(page)
    page.keyboard.press("ArrowRight")
    wait_saved(page)
    expect(page.locator("#save-status")).to_have_text("All answers saved. This item is done.")
    expect(page.locator("#progress-text")).to_have_text("1 of 3 items done")
    assert checked(page) == {"empathy": "B", "safety": "B"}

    page.reload()
    assert checked(page) == {"empathy": "B", "safety": "B"}
    assert study.view_item(rater, position).answers == {"empathy": "B", "safety": "B"}
    page.get_by_role("button", name="Save and go to the next unfinished item").click()
    page.wait_for_url(re.compile(r"/items/\d+$"))
    assert int(page.url.rsplit("/", 1)[1]) != position
    page.goto(server.url + "/overview")
    expect(page.locator("#progress-text")).to_have_text("1 of 3 items done")
    assert_blind(page.content())
    for path in ("/static/review.js", "/static/review.css"):
        assert_blind(page.request.get(server.url + path).text())
    context.close()


def test_a_bad_token_is_refused(browser, server):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/signin")
    page.get_by_label("Token").fill("not-a-real-token")
    with page.expect_response(lambda response: response.request.method == "POST") as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("That token was not accepted.")
    assert [cookie["name"] for cookie in context.cookies()] == ["theraloop_review_signin"], "no session"
    page.goto(server.url + "/items/1")
    assert page.url.endswith("/signin")
    context.close()


def test_script_in_a_response_is_shown_as_text(browser, server, study):
    rater, token = study.add_rater("Dr Script")
    context, page = sign_in(browser, server, token)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    shown = []
    for position in (1, 2, 3):
        page.goto(f"{server.url}/items/{position}")
        shown += page.locator(".response .text").all_inner_texts()
        assert_blind(page.content())
        assert page.evaluate("window.pwned") is None, "injected script ran"
        assert page.locator(".response script, .response img").count() == 0
    assert XSS_RESPONSE in shown and dialogs == []
    context.close()


def test_a_rater_cannot_see_or_change_another_raters_answers(browser, server, study):
    from playwright.sync_api import expect

    first, _ = study.add_rater("Dr First")
    for position in (1, 2, 3):
        study.save_answer(first, position, "empathy", "A")
        study.save_answer(first, position, "safety", "tie")
    before = [rating.model_dump() for rating in study.ratings() if rating.rater_id == first.rater_id]

    second, token = study.add_rater("Dr Second")
    context, page = sign_in(browser, server, token)
    for position in (1, 2, 3):
        page.goto(f"{server.url}/items/{position}")
        assert checked(page) == {}
        expect(page.locator("#progress-text")).to_have_text("0 of 3 items done")
    statuses = page.evaluate("""async (firstPk) => {
        const csrf = document.querySelector("input[name=csrf_token]").value;
        const post = (url, body) => fetch(url, {method: "POST", body: JSON.stringify(body),
            headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}}).then(r => r.status);
        return [
            await post("/api/items/1/answers", {criterion: "empathy", value: "B", rater_id: firstPk}),
            await post("/api/items/1/answers?rater=" + firstPk, {criterion: "empathy", value: "B"}),
            (await fetch("/api/items/1/answers")).status,
        ];
    }""", first.pk)
    assert statuses == [422, 200, 405]
    assert [r.model_dump() for r in study.ratings() if r.rater_id == first.rater_id] == before
    assert study.view_item(second, 1).answers == {"empathy": "B"}
    page.goto(f"{server.url}/items/1")
    assert checked(page) == {"empathy": "B"}
    context.close()


def test_a_server_restart_loses_nothing(browser, server, study):
    from playwright.sync_api import expect

    rater, token = study.add_rater("Dr Restart")
    context, page = sign_in(browser, server, token)
    choose(page, "Empathy", "Both equally good or bad")
    choose(page, "Safety", "Response A")
    page.get_by_role("link", name="Next item").click()
    choose(page, "Empathy", "Response B")
    second_url = page.url

    server.kill()
    server.start()

    page.goto(second_url)  # the session survived the restart: no new sign-in
    assert checked(page) == {"empathy": "B"}
    expect(page.locator("#progress-text")).to_have_text("1 of 3 items done")
    page.get_by_role("link", name="Previous item").click()
    assert checked(page) == {"empathy": "tie", "safety": "A"}
    context.close()


class AttackerSite:
    """Static pages served from another port of 127.0.0.1: reached as http://127.0.0.1:<port> it is
    the same site as the app (SameSite cookies are sent) but another origin; as http://localhost:<port>
    it is another site."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = pages.get(self.path, "not found").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def auto_post(self, path: str, action: str, fields: dict[str, str]) -> None:
        inputs = "".join(f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items())
        self.pages[path] = (f'<!doctype html><form method="post" action="{action}">{inputs}</form>'
                            "<script>document.forms[0].submit()</script>")


@pytest.fixture(scope="module")
def attacker():
    site = AttackerSite()
    yield site
    site.httpd.shutdown()


def forged_post(page, server: ReviewServer, url: str) -> int:
    """Open the attacker's page, which posts to the app at once; the status the app answered."""
    with page.expect_response(lambda response: response.url.startswith(server.url)
                              and response.request.method == "POST") as posted:
        page.goto(url)
    return posted.value.status


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "localhost"], ids=["same-host-other-port", "other-site"])
def test_forged_posts_from_another_origin_change_nothing(browser, server, study, attacker, attacker_host):
    from playwright.sync_api import expect

    victim, token = study.add_rater(f"Dr Victim {attacker_host}")
    intruder, intruder_token = study.add_rater(f"Dr Intruder {attacker_host}")
    context, page = sign_in(browser, server, token)
    # The worst case: even the victim's CSRF token has leaked to the attacker.
    leaked = page.locator("#answers input[name=csrf_token]").get_attribute("value")
    log_before = study.access_log()
    base = f"http://{attacker_host}:{attacker.port}"
    attacker.auto_post("/answer", f"{server.url}/items/1", {"empathy": "A", "safety": "A"})
    attacker.auto_post("/answer-leaked", f"{server.url}/items/1",
                       {"empathy": "A", "safety": "A", "csrf_token": leaked})
    attacker.auto_post("/signin", f"{server.url}/signin", {"token": intruder_token})
    attacker.auto_post("/signout", f"{server.url}/signout", {"csrf_token": leaked})
    attacker.pages["/api"] = ("<!doctype html><script>fetch(" + json.dumps(f"{server.url}/api/items/1/answers")
                              + ', {method: "POST", mode: "no-cors", credentials: "include", '
                              'headers: {"Content-Type": "text/plain"}, '
                              'body: JSON.stringify({criterion: "empathy", value: "A"})})</script>')

    attack = context.new_page()
    statuses = [forged_post(attack, server, base + path) for path in ("/answer", "/answer-leaked", "/signin",
                                                                         "/signout", "/api")]
    assert statuses == [403] * 5
    assert [rating for rating in study.ratings() if rating.rater_id == victim.rater_id] == []
    assert study.access_log() == log_before, "no sign-in, sign-out or session change"

    # The victim is still signed in as themselves, and the app's own forms still work.
    page.goto(server.url + "/overview")
    expect(page.locator(".account")).to_contain_text(f"Signed in as {victim.name}")
    page.goto(server.url + "/items/1")
    page.get_by_role("group", name="Empathy").get_by_label("Response B", exact=True).check()
    page.get_by_role("group", name="Safety").get_by_label("Response A", exact=True).check()
    wait_saved(page)
    assert study.view_item(victim, 1).answers == {"empathy": "B", "safety": "A"}
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/signin$"))
    assert [entry.event for entry in study.access_log()[len(log_before):]] == ["signout"]
    assert intruder.rater_id not in {entry.rater_id for entry in study.access_log()[len(log_before):]}
    context.close()


def test_oversized_bodies_are_refused_without_being_read(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    # Announces 50 MB, sends 1 KB: the answer comes without waiting for (or reading) the rest.
    connection.putrequest("POST", "/api/items/1/answers")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(50 * 1024 * 1024))
    connection.endheaders()
    connection.send(b'{"criterion": "' + b"x" * 1024)
    started = time.monotonic()
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read()) == {"detail": "request body too large"}
    assert time.monotonic() - started < 5
    connection.close()

    # Chunked, with no length announced: cut off once past the limit (16 KiB by default).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/api/items/1/answers")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for _ in range(5):
        connection.send(b"1000\r\n" + b"x" * 4096 + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 413 and b"xxxx" not in response.read()
    connection.close()
