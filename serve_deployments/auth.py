"""Auth: every route but /healthz needs `Authorization: Bearer <token>`, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status


def bearer_guard(token: str | None):
    """A FastAPI dependency that checks the bearer token (or lets everything through when `token` is None)."""
    expected = token.encode("utf-8") if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), expected):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
