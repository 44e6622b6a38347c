"""Target: where a collection lives (an embedded Chroma folder, a Chroma server, or several servers that
shard it), which shard of them a server holds, and the names Chroma takes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import urlparse

from ray_pipeline.records.companions import SUFFIXES, is_companion
from ray_pipeline.records.errors import StoreError, WrongServers

# Chroma's rule for collection names, checked where a name comes in (the CLI, the HTTP API), before any work:
# these characters, and (`collection_name_problem`) no two periods in a row, and not an IPv4 address.
COLLECTION_NAME = r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]"
# Keys of a sharded collection's metadata on each server: how many shards, and which one this is.
SHARDS_KEY, SHARD_KEY = "shards", "shard"


def collection_name_problem(name: str) -> str | None:
    """Why Chroma would refuse this collection name (None: it takes it), as Chroma checks it."""
    if not re.fullmatch(COLLECTION_NAME, name):
        return ("a collection name is 3 to 512 characters of a-z A-Z 0-9 . _ -, starting and ending with a letter "
                "or digit")
    if ".." in name:
        return "a collection name holds no two periods in a row (..)"
    if is_companion(name):
        return f"a name ending in {', '.join(SUFFIXES)} is kept for the collections beside a collection"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return "a collection name is not an IPv4 address"


@dataclass(frozen=True)
class StoreTarget:
    """Where the collection lives: a local folder (embedded Chroma) or a Chroma server URL."""

    collection: str
    path: str | None = None
    url: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers, in the order that routes records: several (`a,b,c`) hold a sharded collection."""
        if self.url is None:
            return ()
        urls = tuple(part.strip() for part in self.url.split(","))
        if "" in urls:
            raise WrongServers(f"Chroma server list {self.url!r}: an empty URL in it (a stray comma?)")
        if len(urls) > 1 and len({server_address(url) for url in urls}) < len(urls):  # `a:8000` is `http://a:8000/`
            raise WrongServers(f"Chroma server list {self.url!r}: a server named twice (each shard needs its own server)")
        return urls

    @property
    def sharded(self) -> bool:
        return len(self.urls) > 1

    def shards(self) -> list[StoreTarget]:
        """One target per server of a sharded collection, in routing order."""
        return [replace(self, url=url) for url in self.urls]

    @property
    def folder(self) -> str:
        """The embedded Chroma folder."""
        if self.path is None:
            raise StoreError(f"{self.describe()} has no folder")
        return self.path

    def describe(self) -> str:
        if self.sharded:
            return f"the {len(self.urls)} Chroma servers {self.url}"
        return f"Chroma server {self.url}" if self.url else f"embedded Chroma at {self.path}"

    def cli_args(self) -> list[str]:
        """The CLI's options that name this collection and where it lives, for a command line another
        process runs (the Serve app's ingestion jobs)."""
        where = ["--chroma-url", self.url] if self.url else ["--chroma-path", self.folder]
        return ["--collection", self.collection, *where]


def server_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a Chroma server URL (`http://` and port 8000 when left out)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise StoreError(f"not a Chroma server URL: {url}")
    return parsed.scheme, parsed.hostname.lower(), parsed.port or (443 if parsed.scheme == "https" else 8000)


@dataclass(frozen=True)
class ShardPlace:
    """Which shard of how many a collection on one server is; an unsharded collection is shard 0 of 1."""

    index: int = 0
    count: int = 1

    @classmethod
    def recorded(cls, metadata: dict) -> ShardPlace:
        return cls(metadata.get(SHARD_KEY, 0), metadata.get(SHARDS_KEY, 1))

    def metadata(self) -> dict[str, int]:
        """What a new collection records of its place (nothing when unsharded, as before shards existed)."""
        return {SHARDS_KEY: self.count, SHARD_KEY: self.index} if self.count > 1 else {}

    def describe(self) -> str:
        return f"shard {self.index} of {self.count} (counting from 0)" if self.count > 1 else "not sharded (one server)"


def check_place(target: StoreTarget, recorded: dict, wanted: ShardPlace) -> None:
    """Refuse a collection whose recorded shard is not the one this list of servers makes it: a reordered,
    shortened or lengthened list would route records to the wrong server."""
    found = ShardPlace.recorded(recorded)
    if found != wanted:
        raise WrongServers(
            f"collection {target.collection!r} on {target.describe()} is {found.describe()}, but the servers given "
            f"make it {wanted.describe()}: give --chroma-url (CHROMA_URL) the servers it was created with, in the "
            "same order, or use another --collection")
