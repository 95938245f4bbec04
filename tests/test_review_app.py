"""The review web app over HTTP (FastAPI TestClient): sign-in, scoping, blinding, escaping, restarts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from theraloop.review import ReviewStore, create_app, load_review_items  # noqa: E402
from theraloop.review._app import SESSION_COOKIE  # noqa: E402
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


def client_for(db: Path) -> TestClient:
    return TestClient(create_app(db))


def sign_in(db: Path, token: str) -> TestClient:
    client = client_for(db)
    response = client.post("/signin", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def checked_values(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="radio" name="(\w+)" value="(\w+)" checked>', html))


def assert_blind(body: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in body.lower(), f"{secret!r} reached the browser"


def test_sign_in_sets_a_strict_http_only_cookie_and_bad_tokens_learn_nothing(study):
    rater, token = study.add_rater("Dr A")
    client = client_for(study.path)
    response = client.post("/signin", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert token not in cookie

    refusals = []
    for bad in ("nonsense", token[:-1], "", "' OR 1=1 --"):
        anonymous = client_for(study.path)
        refused = anonymous.post("/signin", data={"token": bad}, follow_redirects=False)
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert anonymous.get("/items/1", follow_redirects=False).headers["location"] == "/signin"
        refusals.append(refused.text)
    assert len(set(refusals)) == 1, "every bad token gets the same page"
    assert "Dr A" not in refusals[0] and "not accepted" in refusals[0]
    assert client_for(study.path).post("/signin", data={}, follow_redirects=False).status_code == 401


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
    assert forged.post("/items/1", data={"empathy": "A"}, follow_redirects=False).headers["location"] == "/signin"
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
    response = client.post("/items/2", data={"empathy": "A", "safety": "A"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/items/3"
    assert checked_values(client.get("/items/2").text) == {"empathy": "A", "safety": "A"}
    assert study.view_item(rater, 2).answers == {"empathy": "A", "safety": "A"}

    assert client.post("/api/items/1/answers", json={"criterion": "empathy", "value": "C"}).status_code == 422
    assert client.post("/api/items/1/answers", json={"criterion": "kindness", "value": "A"}).status_code == 422
    assert client.post("/api/items/9/answers", json={"criterion": "empathy", "value": "A"}).status_code == 404
    assert client.get("/items/0").status_code == 404 and client.get("/items/4").status_code == 404
    assert client.post("/items/2", data={"empathy": "maybe"}).status_code == 422
    response = client.post("/items/3", data={"empathy": "tie", "safety": "B"}, follow_redirects=False)
    assert response.headers["location"] == "/overview"
    assert "Every item is done" in client.get("/overview").text


def test_a_rater_cannot_see_or_change_another_raters_answers(study):
    first, first_token = study.add_rater("Dr A")
    second, second_token = study.add_rater("Dr B")
    one = sign_in(study.path, first_token)
    for position in (1, 2, 3):
        one.post(f"/items/{position}", data={"empathy": "A", "safety": "B"})
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
    assert two.post("/items/2", data={"empathy": "tie", "rater_pk": str(first.pk)}).status_code == 200
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
    bodies = [client_for(study.path).get("/signin").text,
              client_for(study.path).post("/signin", data={"token": "bad"}).text]
    for position in (1, 2, 3):
        response = client.get(f"/items/{position}")
        assert response.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        bodies.append(response.text)
        bodies.append(client.post(f"/api/items/{position}/answers", json={"criterion": "empathy", "value": "A"}).text)
        bodies.append(client.post(f"/items/{position}", data={"safety": "B"}, follow_redirects=True).text)
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
    response = client.post("/signout", follow_redirects=False)
    assert response.headers["location"] == "/signin"
    replay = client_for(study.path)
    replay.cookies.set(SESSION_COOKIE, session_id)
    assert replay.get("/items/1", follow_redirects=False).status_code == 303
    assert study.rater_for_session(session_id) is None


def test_a_restart_loses_no_answers_sessions_or_progress(study):
    rater, token = study.add_rater("Dr A")
    client = sign_in(study.path, token)
    client.post("/items/1", data={"empathy": "B", "safety": "A"})
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
