"""Companions: the collections that live beside a user's collection and hold what is not one record per photo
(the failures remembered, the faces found, the people they make), and the app's own (its keys, its audit log). Each
is named by a suffix of its own; listings leave them out, and no user's collection may be named so."""

from __future__ import annotations

import hashlib

FAILURES_SUFFIX = "--failed-files"
FACES_SUFFIX = "--faces"
PEOPLE_SUFFIX = "--people"
APP_SUFFIXES = ("--api-keys", "--audit-log")  # the Serve app's keys and audit log (`records.access_keys`)
SUFFIXES = (FAILURES_SUFFIX, FACES_SUFFIX, PEOPLE_SUFFIX, *APP_SUFFIXES)
MAX_NAME = 512  # Chroma's longest collection name


def companion_name(collection: str, suffix: str) -> str:
    """The companion's name: the collection's, and the suffix; a name too long for Chroma (512 characters) is cut
    and told apart by a hash of the whole."""
    name = collection + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(collection.encode()).hexdigest()[:16]
    return f"{collection[: MAX_NAME - len(suffix) - 17]}-{digest}{suffix}"


def is_companion(name: str) -> bool:
    return name.endswith(SUFFIXES)
