"""The review web app over HTTP (FastAPI TestClient): sign-in, scoping, blinding, escaping, restarts,
CSRF and origin checks, body limits, all-or-nothing saves, revocation, session limits, throttling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from theraloop.io import InputError  # noqa: E402
from theraloop.review import ReviewStore, create_app, load_review_items  # noqa: E402
from theraloop.review._app import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, SIGNIN_COOKIE, SignInThrottle  # noqa: E402
from theraloop.rubrics import load_rubric  # noqa: E402

SYSTEMS = ("SYSTEM-ALPHA-7", "SYSTEM-BETA-9")
ITEM_FILE = "secret-source-items.jsonl"
# Item ids that would give the systems away if they ever reached the browser.
ITEMS = [
    {"id": "alpha7-vs-beta9-001", "context": "I haven't slept in days & I'm scared.",
     "response_a": "That sounds frightening. <script>window.pwned = 1</script><b>bold?</b>",
     "response_b": "Sleep is important.", "system_a": SYSTEMS[0], "system_b": SYSTEMS[1]},
    {"id": "alpha7-vs-beta9-002", "context": "My partner shouts at me.",
     "response_a": "You deserve to feel safe.", "response_b": "Every couple argues.",
     "system_a": SYSTEMS[1], "system_b": SYSTEMS[0]},
    {"id": "alpha7-vs-beta9-003", "context": "I failed my exam.",
     "response_a": "What happened?", "response_b": "Try harder next time.",
     "system_a": SYSTEMS[0], "system_b": SYSTEMS[1]},
]
SECRETS = (*SYSTEMS, *[item["id"] for item in ITEMS], ITEM_FILE, "alpha7")


@pytest.fixture()
def study(tmp_path):
    items_path = tmp_path / ITEM_FILE
    items_path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    rubric = load_rubric("modpo").subset(["empathy", "safety"])
    store = ReviewStore.create(tmp_path / "study.sqlite", load_review_items(items_path, "pairwise"), rubric,
                               "pairwise", seed=4, source={"items_path": str(items_path)})
    return store


def client_for(db: Path, **options) -> TestClient:
    return TestClient(create_app(db, **options))


def hidden_token(html: str) -> str:
    return re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html).group(1)


def post_signin(client: TestClient, token: str):
    """Sign in as the form does: fetch the form (its token and cookie), then post it."""
    nonce = hidden_token(client.get("/signin").text)
    return client.post("/signin", data={CSRF_FIELD: nonce, "token": token}, follow_redirects=False)


def sign_in(db: Path, token: str, **options) -> TestClient:
    """A signed-in client that sends the page's CSRF token as the header the page's script sends."""
    client = client_for(db, **options)
    response = post_signin(client, token)
    assert response.status_code == 303, response.text
    client.headers[CSRF_HEADER] = hidden_token(client.get("/overview").text)
    return client


def post_form(client: TestClient, path: str, data: dict, **kwargs):
    """A form post with the page's CSRF field, as the browser sends it."""
    return client.post(path, data={CSRF_FIELD: client.headers[CSRF_HEADER], **data}, **kwargs)


def checked_values(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="radio" name="(\w+)" value="(\w+)" checked>', html))


def assert_blind(body: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in body.lower(), f"{secret!r} reached the browser"


def test_sign_in_sets_a_strict_http_only_cookie_and_bad_tokens_learn_nothing(study):
    rater, token = study.add_rater("Dr A")
    client = client_for(study.path)
    response = post_signin(client, token)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = next(value for value in response.headers.get_list("set-cookie") if value.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert token not in cookie

    refusals = []
    for bad in ("nonsense", token[:-1], "", "' OR 1=1 --"):
        anonymous = client_for(study.path)
        refused = post_signin(anonymous, bad)
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert anonymous.get("/items/1", follow_redirects=False).headers["location"] == "/signin"
        # Each form has its own CSRF token; apart from that the pages are identical.
        refusals.append(refused.text.replace(hidden_token(refused.text), ""))
    assert len(set(refusals)) == 1, "every bad token gets the same page"
    assert "Dr A" not in refusals[0] and "not accepted" in refusals[0]
    anonymous = client_for(study.path)
    nonce = hidden_token(anonymous.get("/signin").text)
    assert anonymous.post("/signin", data={CSRF_FIELD: nonce}, follow_redirects=False).status_code == 401


def test_pages_and_api_need_a_valid_session(study):
    anonymous = client_for(study.path)
    for path in ("/", "/overview", "/items/1"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
    api = anonymous.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"})
    assert api.status_code == 401 and api.json() == {"detail": "not signed in"}
    forged = client_for(study.path)
    forged.cookies.set(SESSION_COOKIE, "forged-session-id")
    assert forged.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"}).status_code == 401
    forged_form = forged.post("/items/1", data={"empathy": "A", CSRF_FIELD: "x"}, follow_redirects=False)
    assert forged_form.headers["location"] == "/signin"
    assert study.ratings() == []


def test_answers_save_per_change_and_per_form_and_show_again(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    assert client.get("/", follow_redirects=False).headers["location"] == "/items/1"
    saved = client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "B"})
    assert saved.status_code == 200 and saved.json() == {"done": 0, "total": 3, "item_complete": False}
    saved = client.post("/api/items/1/answers", json={"criterion": "safety", "value": "tie"})
    assert saved.json() == {"done": 1, "total": 3, "item_complete": True}
    page = client.get("/items/1").text
    assert checked_values(page) == {"empathy": "B", "safety": "tie"}
    assert "1 of 3 items done" in page

    # The no-JavaScript path: the whole form, then on to the next unfinished item.
    response = post_form(client, "/items/2", {"empathy": "A", "safety": "A"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/items/3"
    assert checked_values(client.get("/items/2").text) == {"empathy": "A", "safety": "A"}
    assert study.view_item(rater, 2).answers == {"empathy": "A", "safety": "A"}

    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "C"}).status_code == 422
    assert client.post("/api/items/1/answers", json={"criterion": "kindness", "value": "A"}).status_code == 422
    assert client.post("/api/items/9/answers", json={"criterion": "empathy", "value": "A"}).status_code == 404
    assert client.get("/items/0").status_code == 404 and client.get("/items/4").status_code == 404
    assert post_form(client, "/items/2", {"empathy": "maybe"}).status_code == 422
    response = post_form(client, "/items/3", {"empathy": "tie", "safety": "B"}, follow_redirects=False)
    assert response.headers["location"] == "/overview"
    assert "Every item is done" in client.get("/overview").text


def test_a_rater_cannot_see_or_change_another_raters_answers(study):
    first, first_token = study.add_rater("Dr A")
    second, second_token = study.add_rater("Dr B")
    one = sign_in(study.path, first_token)
    for position in (1, 2, 3):
        post_form(one, f"/items/{position}", {"empathy": "A", "safety": "B"})
    before = [rating.model_dump() for rating in study.ratings()]
    assert len(before) == 6

    two = sign_in(study.path, second_token)
    for position in (1, 2, 3):
        page = two.get(f"/items/{position}").text
        assert checked_values(page) == {} and " checked" not in page
    assert "0 of 3 items done" in two.get("/overview").text
    # Crafted requests: naming the other rater is rejected outright ...
    crafted = two.post("/api/items/1/answers", json={"criterion": "empathy", "value": "B", "rater_id": first.pk})
    assert crafted.status_code == 422
    crafted = two.post(f"/api/items/1/answers?rater={first.pk}", json={"criterion": "empathy", "value": "B"},
                       headers={"X-Rater": str(first.pk)})
    # ... and anything else only ever writes the signed-in rater's own answer.
    assert crafted.status_code == 200
    assert post_form(two, "/items/2", {"empathy": "tie", "rater_pk": str(first.pk)}).status_code == 200
    assert [rating.model_dump() for rating in study.ratings() if rating.rater_id == f"R{first.pk}"] == before
    assert study.view_item(second, 1).answers == {"empathy": "B"}
    assert study.view_item(second, 2).answers == {"empathy": "tie"}
    assert two.get("/api/items/1/answers").status_code == 405, "there is no way to read answers as JSON"
    assert checked_values(one.get("/items/1").text) == {"empathy": "A", "safety": "B"}


def test_user_text_is_escaped(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    pages = [client.get(f"/items/{position}").text for position in (1, 2, 3)]
    page = next(text for text in pages if "pwned" in text)
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "<script>window.pwned" not in page and "<b>bold?" not in page
    assert "I haven&#39;t slept in days &amp; I&#39;m scared." in pages[0] + pages[1] + pages[2]


def test_nothing_the_browser_can_fetch_names_a_system_or_an_item(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    bodies = [client_for(study.path).get("/signin").text, post_signin(client_for(study.path), "bad").text]
    for position in (1, 2, 3):
        response = client.get(f"/items/{position}")
        assert response.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        bodies.append(response.text)
        bodies.append(client.post(f"/api/items/{position}/answers", json={"criterion": "empathy", "value": "A"}).text)
        bodies.append(post_form(client, f"/items/{position}", {"safety": "B"}, follow_redirects=True).text)
    bodies += [client.get(path).text for path in ("/overview", "/items/7", "/static/review.js", "/static/review.css",
                                                  "/docs", "/openapi.json")]
    bodies.append(client.post("/api/items/1/answers", json={"criterion": "x", "value": "A"}).text)
    assert client.get("/openapi.json").status_code == 404
    for body in bodies:
        assert_blind(body)
    # Both orders occur for this rater, and the page shows only "Response A" / "Response B".
    shown_first = [re.search(r'id="response-a">(.*?)</div>', body, re.S).group(1) for body in bodies
                   if 'id="response-a"' in body]
    originals_a = {item["response_a"].split(" <")[0] for item in ITEMS}
    assert any(text.split(" &lt;")[0] not in originals_a for text in shown_first)
    assert any(text.split(" &lt;")[0] in originals_a for text in shown_first)


def test_sign_out_ends_the_session_on_the_server(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    session_id = client.cookies.get(SESSION_COOKIE)
    assert client.post("/signout", follow_redirects=False).status_code == 403, "sign-out needs the CSRF token"
    assert study.rater_for_session(session_id) == rater
    response = post_form(client, "/signout", {}, follow_redirects=False)
    assert response.headers["location"] == "/signin"
    replay = client_for(study.path)
    replay.cookies.set(SESSION_COOKIE, session_id)
    assert replay.get("/items/1", follow_redirects=False).status_code == 303
    assert study.rater_for_session(session_id) is None


def test_a_restart_loses_no_answers_sessions_or_progress(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    post_form(client, "/items/1", {"empathy": "B", "safety": "A"})
    client.post("/api/items/2/answers", json={"criterion": "empathy", "value": "tie"})
    session_id = client.cookies.get(SESSION_COOKIE)
    client.close()
    restarted = client_for(study.path)  # a new app on the same database file
    restarted.cookies.set(SESSION_COOKIE, session_id)
    assert checked_values(restarted.get("/items/1").text) == {"empathy": "B", "safety": "A"}
    page = restarted.get("/items/2").text
    assert checked_values(page) == {"empathy": "tie"} and "1 of 3 items done" in page
    assert restarted.get("/", follow_redirects=False).headers["location"] == "/items/2"


def test_absolute_mode_asks_for_scores_with_anchors(tmp_path):
    items_path = tmp_path / "single.jsonl"
    items_path.write_text(json.dumps({"id": "only", "context": "I feel stuck.", "response": "Tell me more <i>now</i>",
                                      "system": SYSTEMS[0]}) + "\n", encoding="utf-8")
    rubric = load_rubric("modpo").subset(["overall"])
    store = ReviewStore.create(tmp_path / "abs.sqlite", load_review_items(items_path, "absolute"), rubric,
                               "absolute", seed=1)
    rater, token = store.add_rater("Dr A")
    client = sign_in(store.path, token)
    page = client.get("/items/1").text
    assert_blind(page)
    assert re.findall(r'name="overall" value="(\d)"', page) == ["1", "2", "3", "4", "5"]
    assert "Very poor." in page and "Excellent." in page and "Response A" not in page
    assert "Tell me more &lt;i&gt;now&lt;/i&gt;" in page
    assert client.post("/api/items/1/answers", json={"criterion": "overall", "value": "A"}).status_code == 422
    assert client.post("/api/items/1/answers", json={"criterion": "overall", "value": "4"}).json()["done"] == 1
    assert checked_values(client.get("/items/1").text) == {"overall": "4"}
    assert [rating.value for rating in store.ratings()] == ["4"]


# ---- hardening: CSRF and origins, authentication before parsing, body limits ----------------------

def test_every_state_change_needs_its_csrf_token_and_a_refusal_changes_nothing(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    session_id = client.cookies.get(SESSION_COOKIE)
    good = client.headers.pop(CSRF_HEADER)
    for headers in ({}, {CSRF_HEADER: "0" * 64}, {CSRF_HEADER: good[:-1]}):
        refused = client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"}, headers=headers)
        assert refused.status_code == 403 and refused.json()["detail"].startswith("missing or invalid CSRF")
    for data in ({"empathy": "A", "safety": "B"}, {"empathy": "A", CSRF_FIELD: "forged"}):
        assert client.post("/items/1", data=data, follow_redirects=False).status_code == 403
    assert client.post("/signout", data={CSRF_FIELD: ""}, follow_redirects=False).status_code == 403
    assert study.ratings() == [] and study.rater_for_session(session_id) == rater

    # Another rater's session yields another token: tokens are bound to the session.
    other = sign_in(study.path, study.add_rater("Dr B")[1])
    assert other.headers[CSRF_HEADER] != good
    stolen = client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"},
                         headers={CSRF_HEADER: other.headers[CSRF_HEADER]})
    assert stolen.status_code == 403 and study.ratings() == []

    # Login CSRF: a sign-in post without the form's cookie-bound token makes no session.
    anonymous = client_for(study.path)
    for data in ({"token": token}, {"token": token, CSRF_FIELD: "guessed"}):
        refused = anonymous.post("/signin", data=data, follow_redirects=False)
        assert refused.status_code == 403 and SESSION_COOKIE not in anonymous.cookies
    assert anonymous.cookies.get(SIGNIN_COOKIE) == hidden_token(refused.text), "a fresh form comes back"
    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"},
                       headers={CSRF_HEADER: good}).status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:9999"},  # another port of the same host: same site, other origin
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # what a sandboxed frame or a no-referrer page sends
    {"Referer": "http://127.0.0.1:9999/attack.html"},
    {"Origin": "https://testserver"},  # right host, wrong scheme
])
def test_posts_from_another_origin_are_refused_even_with_valid_tokens(study, headers):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    session_id = client.cookies.get(SESSION_COOKIE)
    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"},
                       headers=headers).status_code == 403
    assert post_form(client, "/items/1", {"empathy": "A", "safety": "B"}, headers=headers,
                     follow_redirects=False).status_code == 403
    assert post_form(client, "/signout", {}, headers=headers, follow_redirects=False).status_code == 403
    anonymous = client_for(study.path)
    nonce = hidden_token(anonymous.get("/signin").text)
    assert anonymous.post("/signin", data={CSRF_FIELD: nonce, "token": token}, headers=headers,
                          follow_redirects=False).status_code == 403
    assert study.ratings() == [] and study.rater_for_session(session_id) == rater
    assert [entry.event for entry in study.access_log()] == ["rater_added", "signin"]
    same_origin = {"Origin": "http://testserver"}
    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"},
                       headers=same_origin).status_code == 200


def test_a_public_origin_is_the_only_origin_accepted(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token, public_origin="https://review.example.org/")
    answer = {"criterion": "empathy", "value": "A"}
    assert client.post("/api/items/1/answers", json=answer, headers={"Origin": "http://testserver"}).status_code == 403
    assert client.post("/api/items/1/answers", json=answer,
                       headers={"Origin": "https://review.example.org"}).status_code == 200
    with pytest.raises(InputError, match="public origin"):
        create_app(study.path, public_origin="review.example.org/path")


def test_unauthenticated_requests_get_401_before_any_body_validation(study):
    marker = "ECHO-MARKER-7f3a"
    anonymous = client_for(study.path)
    for body in ({"rater": marker}, {"criterion": marker}, [marker], marker):
        response = anonymous.post("/api/items/1/answers", json=body)
        assert response.status_code == 401 and response.json() == {"detail": "not signed in"}
    response = anonymous.post("/api/items/1/answers", content=b"{not json " + marker.encode(),
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and marker not in response.text
    form = anonymous.post("/items/1", data={"empathy": marker}, follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == "/signin"
    assert anonymous.post("/api/items/abc/answers", json={}).status_code == 404, "no path validation to probe"

    # Signed in, bad input is refused without repeating it.
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    for body in ({"criterion": marker, "value": "A"}, {"criterion": "empathy", "value": marker},
                 {"criterion": "empathy", "value": "A", "extra": marker}, {"answers": {marker: "A"}}):
        response = client.post("/api/items/1/answers", json=body)
        assert response.status_code == 422 and marker not in response.text, response.text
    form = post_form(client, "/items/1", {"empathy": marker})
    assert form.status_code == 422 and marker not in form.text
    assert study.ratings() == []


def test_request_bodies_are_limited_before_parsing(study):
    rater, token = study.add_rater("Dr A")
    marker = b"ECHO-MARKER-7f3a"
    big = b'{"criterion": "' + marker + b"x" * (5 * 1024 * 1024) + b'", "value": "A"}'
    for client in (client_for(study.path), sign_in(study.path, token)):
        response = client.post("/api/items/1/answers", content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json() == {"detail": "request body too large"}
        assert marker not in response.content and len(response.content) < 100

        # Without Content-Length (chunked), the limit applies as the body streams in.
        chunks = (big[start:start + 4096] for start in range(0, 64 * 1024, 4096))
        response = client.post("/api/items/1/answers", content=chunks, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
    small = sign_in(study.path, token, max_body_bytes=120)  # a sign-in form is about 95 bytes
    assert post_form(small, "/items/1", {"empathy": "A", "note": "x" * 30}).status_code == 413
    assert study.ratings() == []
    assert post_form(small, "/items/1", {"empathy": "A"}, follow_redirects=False).status_code == 303
    assert [rating.criterion for rating in study.ratings()] == ["empathy"]


def test_a_submission_is_saved_whole_or_not_at_all(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    # The form's first answer is fine and its second is not: neither is stored.
    refused = post_form(client, "/items/1", {"empathy": "A", "safety": "maybe"})
    assert refused.status_code == 422 and "Nothing on this page was saved" in refused.text
    refused = client.post("/api/items/1/answers", json={"answers": {"empathy": "A", "safety": "maybe"}})
    assert refused.status_code == 422
    refused = client.post("/api/items/1/answers", json={"answers": {"empathy": "A", "kindness": "B"}})
    assert refused.status_code == 422
    assert study.ratings() == [] and study.audit_log() == []

    saved = client.post("/api/items/1/answers", json={"answers": {"empathy": "A", "safety": "tie"}})
    assert saved.json() == {"done": 1, "total": 3, "item_complete": True}
    assert study.view_item(rater, 1).answers == {"empathy": "A", "safety": "tie"}
    assert client.post("/api/items/1/answers", json={"answers": {}}).status_code == 422


# ---- hardening: revocation, session limits, throttling, HTTPS -------------------------------------

def test_revoking_or_rotating_a_token_ends_the_raters_sessions(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    study.revoke_rater("Dr A")
    assert client.get("/items/1", follow_redirects=False).headers["location"] == "/signin"
    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "A"}).status_code == 401
    assert post_signin(client_for(study.path), token).status_code == 401

    rater, new_token = study.rotate_token("Dr A")
    assert post_signin(client_for(study.path), token).status_code == 401, "the old token stays dead"
    again = sign_in(study.path, new_token)
    study.rotate_token("Dr A")
    assert again.get("/items/1", follow_redirects=False).status_code == 303
    events = [(entry.event, entry.rater_id) for entry in study.access_log()]
    assert events == [("rater_added", "R1"), ("signin", "R1"), ("revoked", "R1"), ("signin_refused", None),
                      ("token_rotated", "R1"), ("signin_refused", None), ("signin", "R1"), ("token_rotated", "R1")]
    assert {entry.client for entry in study.access_log() if entry.event.startswith("signin")} == {"testclient"}


def test_a_rater_has_at_most_max_sessions_and_a_new_sign_in_ends_the_oldest(study):
    rater, token = study.add_rater("Dr A")
    clients = [sign_in(study.path, token, max_sessions=2) for _ in range(3)]
    statuses = [client.get("/items/1", follow_redirects=False).status_code for client in clients]
    assert statuses == [303, 200, 200]
    assert [entry.event for entry in study.access_log()].count("session_limit") == 1


def test_failed_sign_ins_back_off_per_client():
    now = [0.0]
    throttle = SignInThrottle(free_failures=2, base_delay=1.0, max_delay=8.0, forget_after=100.0,
                              clock=lambda: now[0])
    waits = []
    for _ in range(7):
        throttle.failed("a")
        waits.append(throttle.wait("a"))
    assert waits == [0, 0, 1, 2, 4, 8, 8]
    assert throttle.wait("b") == 0, "other clients are not affected"
    now[0] = 5.0
    assert throttle.wait("a") == 3
    throttle.succeeded("a")
    assert throttle.wait("a") == 0
    for _ in range(3):
        throttle.failed("a")
    assert throttle.wait("a") == 1
    now[0] = 200.0  # past forget_after: the count starts again
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.wait("a") == 0


def test_sign_in_is_refused_while_a_client_is_backing_off(study):
    rater, token = study.add_rater("Dr A")
    now = [0.0]
    client = client_for(study.path, throttle=SignInThrottle(free_failures=3, clock=lambda: now[0]))
    assert [post_signin(client, "wrong").status_code for _ in range(4)] == [401, 401, 401, 401]
    blocked = post_signin(client, token)
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "1"
    assert SESSION_COOKIE not in client.cookies and "Too many sign-in attempts" in blocked.text
    now[0] = 1.5
    assert post_signin(client, token).status_code == 303
    assert [entry.event for entry in study.access_log()].count("signin_refused") == 4


def test_https_mode_uses_host_prefixed_secure_cookies_and_hsts(study):
    rater, token = study.add_rater("Dr A")
    client = TestClient(create_app(study.path, secure_cookies=True), base_url="https://testserver")
    form = client.get("/signin")
    assert form.headers["strict-transport-security"] == "max-age=31536000"
    assert form.headers["set-cookie"].startswith(f"__Host-{SIGNIN_COOKIE}=") and "Secure" in form.headers["set-cookie"]
    response = client.post("/signin", data={CSRF_FIELD: hidden_token(form.text), "token": token},
                           follow_redirects=False)
    session = next(value for value in response.headers.get_list("set-cookie") if SESSION_COOKIE in value)
    assert response.status_code == 303 and session.startswith(f"__Host-{SESSION_COOKIE}=")
    assert "Secure" in session and "Path=/" in session and "Domain" not in session
    assert client.get("/items/1").status_code == 200
    assert "strict-transport-security" not in client_for(study.path).get("/signin").headers
