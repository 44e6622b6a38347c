"""Cache: what this project works out once for its user and reads back after (checkpoint digests, the facts of a
model, exports of its text tower), kept in $XDG_CACHE_HOME/ray-photo-embeddings or ~/.cache/ray-photo-embeddings.

Nothing kept here is ever the only copy of anything: a cache that cannot be read or written is worked out again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile


def user_cache() -> str:
    """The folder of the caches kept for this user."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ray-photo-embeddings")


def file_key(path: str) -> str:
    """A file's identity as it is now: its path, size, modification time and inode (any change makes a new key)."""
    info = os.stat(path)
    return f"{os.path.realpath(path)}|{info.st_size}|{info.st_mtime_ns}|{info.st_ino}"


def kept(kind: str, key: str) -> str | None:
    """The text kept under `key` among `kind`; None where there is none (or it cannot be read)."""
    try:
        with open(_where(kind, key), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def keep(kind: str, key: str, text: str) -> None:
    """Keep `text` under `key`, whole or not at all (a file written aside, then renamed); a cache that cannot be
    written is left as it is."""
    where = _where(kind, key)
    try:
        os.makedirs(os.path.dirname(where), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(where), delete=False, encoding="utf-8") as out:
            out.write(text)
        os.replace(out.name, where)
    except OSError:
        pass


def forget(kind: str, key: str) -> None:
    try:
        os.unlink(_where(kind, key))
    except OSError:
        pass


def _where(kind: str, key: str) -> str:
    return os.path.join(user_cache(), kind, hashlib.sha256(key.encode()).hexdigest()[:32])
