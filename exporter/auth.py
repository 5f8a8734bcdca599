"""Bearer tokens for mutating endpoints: compared in constant time, never logged."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def require_bearer(request: Request, token: str | None, what: str, setting: str) -> None:
    """Raise 403 when the endpoint is disabled (no token configured), 401 on a missing or
    wrong token; return when the request carries the right one."""
    if token is None:
        raise HTTPException(403, f"{what} is disabled: set {setting} to enable it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": 'Bearer realm="gpu-fleet-exporter"'})
