"""Access keys through the Serve app: keys of each scope made by an admin over HTTP, every route tried with each
(allowed, or 403 naming the scope needed), a key limited to one collection, a revoked key refused at its next
request; secrets never in a later answer, the audit log or the app's logs. And the `keys` command on a store of
its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from serve_app import auth

from ray_pipeline.records.access_keys import SCOPES

BOGUS_ID = "0" * 64
# Every route, as (method, path, JSON body or None), and the least scope that may use it.
ROUTES = [
    ("GET", "/whoami", None, "search"),
    ("GET", "/models", None, "search"),
    ("POST", "/collections", {"name": "keys-a", "model": "no-such-model@x"}, "admin"),
    ("POST", "/collections/keys-a/reindex", {"model": "no-such-model@x"}, "admin"),
    ("GET", "/collections", None, "search"),
    ("GET", "/collections/keys-a", None, "search"),
    ("DELETE", "/collections/keys-a", {"confirm": "keys-x"}, "admin"),
    ("GET", "/collections/keys-a/photos", None, "search"),
    ("GET", "/collections/keys-a/similar", None, "search"),
    ("GET", "/collections/keys-a/people", None, "search"),
    ("GET", "/collections/keys-a/people/person-000000000000/faces", None, "search"),
    ("GET", "/collections/keys-a/faces/nothing/thumbnail", None, "search"),
    ("POST", "/collections/keys-a/people/like", None, "search"),
    ("POST", "/search", {"collection": "keys-a", "text": "a cat"}, "search"),
    ("POST", "/search/text", {"collection": "keys-a", "text": "a cat"}, "search"),
    ("POST", "/search/image", None, "search"),
    ("GET", f"/thumbnails/keys-a/{BOGUS_ID}", None, "search"),
    ("POST", "/ingest", {"collection": "keys-a", "paths": ["/nonexistent"]}, "ingest"),
    ("POST", "/ingest/upload", None, "ingest"),
    ("POST", "/watches", {"collection": "keys-a", "paths": ["/nonexistent"]}, "ingest"),
    ("GET", "/ingest", None, "ingest"),
    ("GET", "/ingest/ingest-0000000000000000", None, "ingest"),
    ("GET", "/ingest/ingest-0000000000000000/logs", None, "ingest"),
    ("DELETE", "/ingest/ingest-0000000000000000", None, "ingest"),
    ("POST", "/caption", None, "ingest"),
    ("POST", "/text", None, "ingest"),
    ("POST", "/collections/keys-a/people/person-000000000000/name", {"name": "Anna"}, "ingest"),
    ("POST", "/collections/keys-a/people/merge", {"into": "a", "other": "b"}, "ingest"),
    ("POST", "/collections/keys-a/people/regroup", {}, "ingest"),
    ("POST", "/collections/keys-a/faces/nothing/person", {"person": None}, "ingest"),
    ("GET", "/keys", None, "admin"),
    ("POST", "/keys", {"name": "x"}, "admin"),
    ("DELETE", "/keys/key-000000000000", None, "admin"),
    ("GET", "/audit", None, "admin"),
]


def test_every_route_of_the_app_is_in_the_table():
    """Each route the ingress declares (`@app.get("/...")` and the like) is tried below, so a new one is not missed."""
    source = (ROOT / "serve_deployments" / "ingress.py").read_text()
    declared = {(method.upper(), path) for method, path in re.findall(r'@app\.(get|post|delete|put|patch)\("([^"]+)"', source)
                if not path.startswith(("/ui", "/healthz"))}
    templated = {(method, re.sub(r"/keys-a(?=/|$)", "/{collection}", path)) for method, path, _, _ in ROUTES}
    assert len(declared) == len(ROUTES)
    assert {(m, re.sub(r"\{[^}]+\}", "*", p)) for m, p in declared} == {
        (m, re.sub(r"\{[^}]+\}", "*", re.sub(r"person-0+|nothing|ingest-0+|key-0+|0{64}", "{x}", p))) for m, p in templated}


def call(service, secret: str, method: str, path: str, body) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    if body and body.get("paths") == ["/nonexistent"]:  # inside the allowed roots, and missing: a 404, not a 403
        body = {**body, "paths": [str(service["allowed"] / "nonexistent")]}
    if body is None and method == "POST":
        return requests.post(f"{service['url']}{path}", headers=headers, files={"file": ("x.jpg", b"no photo")},
                             data={"collection": "keys-a"}, timeout=60)
    return requests.request(method, f"{service['url']}{path}", headers=headers, json=body, timeout=60)


def make_key(service, **fields) -> dict:
    made = requests.post(f"{service['url']}/keys", headers=auth(service), json=fields, timeout=60)
    assert made.status_code == 201, made.text
    return made.json()


@pytest.fixture(scope="module")
def keys(service) -> dict[str, dict]:
    return {scope: make_key(service, name=f"a {scope} key", scope=scope) for scope in SCOPES}


def test_each_scope_may_use_its_routes_and_no_others(service, keys):
    for scope, key in keys.items():
        for method, path, body, needed in ROUTES:
            answer = call(service, key["secret"], method, path, body)
            if SCOPES.index(scope) >= SCOPES.index(needed):
                assert answer.status_code not in (401, 403), (scope, method, path, answer.status_code, answer.text)
            else:
                assert answer.status_code == 403, (scope, method, path, answer.status_code, answer.text)
                assert answer.json()["detail"] == f"this key's scope is {scope}: this needs the {needed} scope"
    whoami = call(service, keys["search"]["secret"], "GET", "/whoami", None).json()
    assert whoami == {k: v for k, v in keys["search"].items() if k != "secret"}


def test_a_key_limited_to_a_collection_uses_no_other(service):
    limited = make_key(service, name="album A only", scope="ingest", collections=["keys-a"])
    assert limited["collections"] == ["keys-a"]
    secret = limited["secret"]
    for method, path, body in [("GET", "/collections/keys-b/photos", None),
                               ("POST", "/search", {"collection": "keys-b", "text": "a cat"}),
                               ("POST", "/ingest", {"collection": "keys-b", "paths": ["/nonexistent"]}),
                               ("GET", f"/thumbnails/keys-b/{BOGUS_ID}", None)]:
        answer = call(service, secret, method, path, body)
        assert answer.status_code == 403 and "may not use collection 'keys-b'" in answer.text, (path, answer.text)
    assert call(service, secret, "GET", "/collections/keys-a/photos", None).status_code == 404  # allowed: none yet
    listed = call(service, secret, "GET", "/collections", None).json()["collections"]
    assert all(entry["name"] == "keys-a" for entry in listed)


def test_bad_keys_are_refused_naming_the_field(service):
    for fields, field in [({"name": "", "scope": "search"}, "name"), ({"name": "x", "scope": "everything"}, "scope"),
                          ({"name": "x", "scope": "search", "collections": []}, "collections"),
                          ({"name": "x", "scope": "search", "collections": ["bad name!"]}, "collections"),
                          ({"name": "x" * 101, "scope": "search"}, "name"),
                          ({"name": "x", "scope": "search", "extra": 1}, "extra")]:
        refused = requests.post(f"{service['url']}/keys", headers=auth(service), json=fields, timeout=60)
        assert refused.status_code == 422 and field in refused.text, (fields, refused.text)
    unknown = requests.delete(f"{service['url']}/keys/key-000000000000", headers=auth(service), timeout=60)
    assert unknown.status_code == 422 and "key: no key" in unknown.text
    for wrong in ["pk_key-000000000000_" + "a" * 43, "not-a-key", ""]:
        assert call(service, wrong, "GET", "/collections", None).status_code == 401


def test_a_revoked_key_is_refused_and_secrets_never_shown_again(service, ray_head):
    key = make_key(service, name="to revoke", scope="search")
    assert call(service, key["secret"], "GET", "/collections", None).status_code == 200
    revoked = requests.delete(f"{service['url']}/keys/{key['id']}", headers=auth(service), timeout=60)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True and "secret" not in revoked.json()
    assert call(service, key["secret"], "GET", "/collections", None).status_code == 401  # at its next request
    listed = requests.get(f"{service['url']}/keys", headers=auth(service), timeout=60)
    assert key["id"] in listed.text and key["secret"] not in listed.text and "digest" not in listed.text
    entries = requests.get(f"{service['url']}/audit", headers=auth(service), timeout=60).json()["entries"]
    assert [(e["action"], e["key"]) for e in entries[:2]] == [("key revoked", "env-admin"), ("key created", "env-admin")]
    assert key["id"] in entries[0]["detail"] and key["secret"] not in json.dumps(entries)
    logs = Path(ray_head["temp_dir"]) / "session_latest" / "logs"
    for log in logs.rglob("*"):
        if log.is_file():
            assert key["secret"] not in log.read_text(errors="replace"), log


def test_a_prune_is_audited_with_the_keys_id(service, keys):
    folder = service["allowed"]
    answer = call(service, keys["ingest"]["secret"], "POST", "/ingest",
                  {"collection": "keys-audit", "paths": [str(folder)], "prune": True})
    assert answer.status_code == 202, answer.text
    entries = requests.get(f"{service['url']}/audit", headers=auth(service), timeout=60).json()["entries"]
    prune = next(e for e in entries if e["action"] == "prune")
    assert (prune["key"], prune["key_name"], prune["collection"]) == (keys["ingest"]["id"], "a ingest key", "keys-audit")


def test_the_keys_command_on_a_store_of_its_own(tmp_path):
    def keys(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ray_pipeline", "keys", *args, "--chroma-path", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    made = keys("create", "--name", "phones", "--scope", "search", "--collections", "family,trips")
    assert made.returncode == 0, made.stderr[-2000:]
    key = json.loads(made.stdout)
    assert (key["scope"], key["collections"], key["secret"].startswith(f"pk_{key['id']}_")) == ("search", ["family", "trips"], True)
    listed = keys("list")
    assert key["id"] in listed.stdout and key["secret"] not in listed.stdout
    assert json.loads(keys("revoke", key["id"]).stdout)["revoked"] is True
    bad = keys("create", "--name", "x", "--scope", "search", "--collections", "no good!")
    assert bad.returncode == 2 and "collections: 'no good!'" in bad.stderr
