"""Store errors: why a collection cannot be used as asked, each kind told apart (retried, or an answer)."""

from __future__ import annotations

from ray_pipeline.core.errors import UserFacingError


class StoreError(UserFacingError):
    """The collection cannot be used as asked; the message says why."""


class MissingCollection(StoreError):
    """The store answered and has no such collection: an answer, never retried."""


class WrongServers(StoreError):
    """The servers given are not a list of servers, or not the shards the collection was created on: an
    answer, never retried (a wrong list must never route a record to another shard)."""


class Unreachable(StoreError):
    """A Chroma server did not answer: worth trying again."""


class FolderInUse(StoreError):
    """Another process holds the embedded Chroma folder (a Serve app's owner, or another job)."""
