"""Access keys and the audit log: who may do what in the Serve app, kept in the app's own store so that every
replica sees a change at its next request (a key revoked is refused at once, everywhere).

A key has one of three scopes, each allowing what the one before it does: `search` (search, browse, similar,
thumbnails, people and places listings), `ingest` (ingestion, uploads, watches, captions, naming people, job control)
and `admin` (keys, and what changes the app's collections wholesale). A key may be limited to some collections. Its
secret (`pk_<key id>_<random>`) is shown once, when it is made, and kept only as its SHA-256.

The audit log holds one record per destructive act (a prune, a watch, people merged, a key made or revoked): when,
the key's id (never its secret), what, on which collection.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.records.target import collection_name_problem

KEYS_COLLECTION = "photo-app--api-keys"  # names ending so are companions: listings leave them out
AUDIT_COLLECTION = "photo-app--audit-log"
SCOPES = ("search", "ingest", "admin")  # each allows what the ones before it do
ENV_KEY_ID = "env-admin"  # INGEST_API_TOKEN's key: admin, every collection
MAX_KEY_NAME = 100
_SECRET = re.compile(r"pk_(key-[0-9a-f]{12})_[A-Za-z0-9_-]{20,100}")


class AccessError(UserFacingError):
    """A key that cannot be made or found, with the field it came in ("scope: ...")."""


@dataclass(frozen=True)
class Key:
    """A key as kept: id, name, scope, the collections it may use (None: every one), when made, whether revoked."""

    id: str
    name: str
    scope: str
    collections: tuple[str, ...] | None
    created: float
    revoked: bool = False

    def allows(self, needed: str) -> bool:
        return not self.revoked and SCOPES.index(self.scope) >= SCOPES.index(needed)

    def may_use(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def as_json(self) -> dict:
        return {"id": self.id, "name": self.name, "scope": self.scope,
                "collections": list(self.collections) if self.collections is not None else None,
                "created": self.created, "revoked": self.revoked}


ENV_KEY = Key(ENV_KEY_ID, "INGEST_API_TOKEN", "admin", None, 0.0)


def checked_key_fields(name: str, scope: str, collections: list[str] | None) -> tuple[str, str, tuple[str, ...] | None]:
    """A new key's fields as kept; AccessError naming the field for a malformed one."""
    tidy = " ".join(name.split())
    if not tidy or len(tidy) > MAX_KEY_NAME or not tidy.isprintable():
        raise AccessError(f"name: 1 to {MAX_KEY_NAME} printable characters")
    if scope not in SCOPES:
        raise AccessError(f"scope: one of {', '.join(SCOPES)}")
    if collections is not None:
        if not collections:
            raise AccessError("collections: at least one, or none given for every collection")
        for collection in collections:
            problem = collection_name_problem(collection)
            if problem:
                raise AccessError(f"collections: {collection[:80]!r}: {problem}")
    return tidy, scope, tuple(sorted(set(collections))) if collections is not None else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _key(record_id: str, metadata: dict) -> Key:
    collections = metadata.get("collections")
    return Key(record_id, metadata.get("name", ""), metadata.get("scope", "search"),
               tuple(collections or ()) if metadata.get("limited") else None, float(metadata.get("created", 0.0)),
               bool(metadata.get("revoked")))


class KeyBook:
    """The app's keys and audit log, in two collections of its store (`client`: a Chroma client of it)."""

    def __init__(self, client):
        self._keys = client.get_or_create_collection(KEYS_COLLECTION, embedding_function=None)
        self._audit = client.get_or_create_collection(AUDIT_COLLECTION, embedding_function=None)

    def create(self, name: str, scope: str, collections: list[str] | None) -> tuple[Key, str]:
        """A new key and its secret (shown once: only its SHA-256 is kept)."""
        name, scope, limited = checked_key_fields(name, scope, collections)
        key = Key(f"key-{uuid.uuid4().hex[:12]}", name, scope, limited, round(time.time(), 3))
        secret = f"pk_{key.id}_{secrets.token_urlsafe(32)}"
        metadata = {"name": key.name, "scope": key.scope, "created": key.created, "revoked": False,
                    "digest": _digest(secret), "limited": limited is not None,
                    **({"collections": list(limited)} if limited else {})}
        self._keys.upsert(ids=[key.id], embeddings=[[1.0]], metadatas=[metadata])
        return key, secret

    def keys(self) -> list[Key]:
        found = self._keys.get(include=["metadatas"])
        return sorted((_key(i, m or {}) for i, m in zip(found["ids"], found["metadatas"])), key=lambda k: k.created)

    def revoke(self, key_id: str) -> Key:
        found = self._keys.get(ids=[key_id], include=["metadatas"])
        if not found["ids"]:
            raise AccessError(f"key: no key {key_id!r}")
        self._keys.update(ids=[key_id], metadatas=[{"revoked": True}])
        return _key(key_id, {**(found["metadatas"][0] or {}), "revoked": True})

    def verify(self, secret: str) -> Key | None:
        """The key whose secret this is, where it is not revoked; None for any other."""
        match = _SECRET.fullmatch(secret)
        if match is None:
            return None
        found = self._keys.get(ids=[match.group(1)], include=["metadatas"])
        if not found["ids"]:
            return None
        metadata = found["metadatas"][0] or {}
        if not hmac.compare_digest(str(metadata.get("digest", "")), _digest(secret)):
            return None
        key = _key(found["ids"][0], metadata)
        return None if key.revoked else key

    def audit(self, key: Key, action: str, collection: str | None = None, detail: str = "") -> None:
        """One destructive act, by `key` (its id, never its secret)."""
        self._audit.add(ids=[f"{time.time():017.6f}-{uuid.uuid4().hex[:8]}"], embeddings=[[1.0]],
                        metadatas=[{"time": round(time.time(), 3), "key": key.id, "key_name": key.name, "action": action,
                                    "collection": collection or "", "detail": detail[:500]}])

    def audit_log(self, limit: int) -> list[dict]:
        """The newest `limit` entries, newest first."""
        found = self._audit.get(include=["metadatas"])
        entries = sorted(({"id": i, **(m or {})} for i, m in zip(found["ids"], found["metadatas"])), key=lambda e: e["id"])
        return entries[::-1][:limit]
