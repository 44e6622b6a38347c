"""Auth: every route but /healthz needs `Authorization: Bearer <token>`, compared in constant time."""

from __future__ import annotations

import hmac


def bearer_check(token: str | None):
    """A function of the Authorization header: does it carry the token? (Always yes when `token` is None.)"""
    expected = token.encode("utf-8") if token else None

    def check(authorization: str) -> bool:
        if expected is None:
            return True
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), expected)

    return check
