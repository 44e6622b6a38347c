"""Access: which key a request carries and what it may do. Every route but /healthz and the page's own files needs
`Authorization: Bearer <secret>`: the INGEST_API_TOKEN (an admin key for every collection, compared in constant
time), or a key made over `POST /keys` (`records.access_keys`, looked up at each request, so a revocation holds
at once in every replica). Each route needs a scope (`SCOPE_OF`); a key limited to some collections may not name
another one, in the path or in the body.
"""

from __future__ import annotations

import hmac
import re
from contextvars import ContextVar

from ray_pipeline.records.access_keys import ENV_KEY, Key, KeyBook
from ray_pipeline.records.collections import Removed, delete_collection, show_collection
from ray_pipeline.records.connection import connect
from ray_pipeline.records.owner import owner_answer
from ray_pipeline.records.target import StoreTarget

# (method, path, scope): the first that matches decides; a route none matches needs `admin`.
SCOPE_OF: list[tuple[str, re.Pattern, str]] = [(method, re.compile(path), scope) for method, path, scope in [
    ("GET", r"/whoami|/models", "search"),
    ("GET", r"/collections(/[^/]+)?", "search"),
    ("GET", r"/collections/[^/]+/(photos|similar|people|people/[^/]+/faces|faces/[^/]+/thumbnail)", "search"),
    ("POST", r"/collections/[^/]+/people/like", "search"),
    ("POST", r"/search(/text|/image)?", "search"),
    ("GET", r"/thumbnails/[^/]+/[^/]+", "search"),
    ("POST", r"/ingest|/ingest/upload|/watches|/caption|/text", "ingest"),
    ("GET", r"/ingest(/[^/]+)?(/logs)?", "ingest"),
    ("DELETE", r"/ingest/[^/]+", "ingest"),
    ("POST", r"/collections/[^/]+/(people/[^/]+/name|people/merge|people/regroup|faces/[^/]+/person)", "ingest"),
]]
_COLLECTION_IN_PATH = re.compile(r"/(?:collections|thumbnails)/([^/]+)/")

# The request's key, set by the middleware. Reached through `current_key` and `use_key` only: the Serve ingress
# pickles its routes' globals, and a ContextVar does not pickle.
_CURRENT_KEY: ContextVar[Key] = ContextVar("current_key", default=ENV_KEY)


def current_key() -> Key:
    return _CURRENT_KEY.get()


def use_key(key: Key) -> None:
    _CURRENT_KEY.set(key)


def scope_needed(method: str, path: str) -> str:
    return next((scope for m, pattern, scope in SCOPE_OF if m == method and pattern.fullmatch(path)), "admin")


def collection_in_path(path: str) -> str | None:
    found = _COLLECTION_IN_PATH.match(path)
    return found.group(1) if found else None


def _verify(client, secret: str) -> Key | None:
    return KeyBook(client).verify(secret)


def create_key(client, name: str, scope: str, collections: list[str] | None) -> tuple[Key, str]:
    return KeyBook(client).create(name, scope, collections)


def list_keys(client) -> list[Key]:
    return KeyBook(client).keys()


def revoke_key(client, key_id: str) -> Key:
    return KeyBook(client).revoke(key_id)


def audit(client, key: Key, action: str, collection: str | None, detail: str) -> None:
    KeyBook(client).audit(key, action, collection, detail)


def show(client, collection: str, failures: int) -> dict:
    return show_collection(client, collection, failures)


def delete(client, collection: str, confirm: str) -> Removed:
    return delete_collection(client, collection, confirm)


def audit_log(client, limit: int) -> list[dict]:
    return KeyBook(client).audit_log(limit)


class AppKeys:
    """The app's keys, kept in its store: through the embedded folder's owner actor, or on the Chroma server (the
    first, of several)."""

    def __init__(self, token: str | None, store: StoreTarget, owner):
        self._token = token.encode("utf-8") if token else None
        self._store = store.shards()[0] if store.sharded else store
        self._owner = owner
        self._client = None

    def run(self, call, *args):
        """`call(client, *args)` with a client of the app's store."""
        if self._owner is not None:
            return owner_answer(self._owner.with_client.remote(call, *args))
        if self._client is None:
            self._client = connect(self._store)
        return call(self._client, *args)

    def key_of(self, authorization: str) -> Key | None:
        """The key an Authorization header carries; None for none, a wrong one or a revoked one."""
        if self._token is None:  # INGEST_ALLOW_NO_AUTH=1: open to anyone
            return ENV_KEY
        scheme, _, given = authorization.partition(" ")
        secret = given.strip()
        if scheme.lower() != "bearer" or not secret:
            return None
        if hmac.compare_digest(secret.encode("utf-8"), self._token):
            return ENV_KEY
        return self.run(_verify, secret)
