"""Bearer tokens for mutating endpoints: compared in constant time, never logged.

Failed attempts are rate limited per client address (a token bucket per address, in a bounded
LRU), and every attempt on a mutating endpoint leaves one audit line: client, path, outcome.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import HTTPException, Request

audit = logging.getLogger("exporter.audit")


class FailureLimiter:
    """Failed token attempts per client address: a bucket of `burst` failures refilled at
    `burst / window` per second. The failure that empties it locks the address out for
    `lockout` seconds: its requests get 429 without the token being looked at.

    Memory is bounded: at most `max_clients` addresses are remembered, the least recently
    seen forgotten first (an address that is forgotten starts again with a full bucket).
    """

    def __init__(self, burst: int = 10, window: float = 60.0, lockout: float = 60.0,
                 max_clients: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.lockout = float(burst), burst / window, lockout
        self.max_clients, self.clock = max_clients, clock
        self._state: OrderedDict[str, list[float]] = OrderedDict()  # [tokens, at, until]
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it may try now."""
        with self._lock:
            state = self._state.get(client)
            if state is None:
                return None
            left = state[2] - self.clock()
            return left if left > 0 else None

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            state = self._state.pop(client, None) or [self.burst, now, 0.0]
            tokens = min(self.burst, state[0] + (now - state[1]) * self.rate) - 1
            until = state[2]
            if tokens < 1:  # that was the last failure allowed: lock out, then a full bucket
                tokens, until = self.burst, now + self.lockout
            self._state[client] = [tokens, now, until]  # (re)inserted: most recently seen
            while len(self._state) > self.max_clients:
                self._state.popitem(last=False)

    def __len__(self) -> int:
        return len(self._state)


def require_bearer(request: Request, token: str | None, what: str, setting: str,
                   limiter: FailureLimiter | None = None) -> None:
    """Raise 403 when the endpoint is disabled (no token configured), 429 when the client
    failed too often lately, 401 on a missing or wrong token; return when the request
    carries the right one. Every call leaves one audit line (never the token)."""
    client = request.client.host if request.client else "?"
    path = request.url.path

    def outcome(result: str, level: int = logging.WARNING) -> None:
        audit.log(level, "token check on %s: %s", path, result,
                  extra={"client": client, "path": path, "outcome": result})

    if token is None:
        outcome("disabled")
        raise HTTPException(403, f"{what} is disabled: set {setting} to enable it")
    if limiter is not None and (wait := limiter.retry_after(client)) is not None:
        outcome("rate-limited")
        raise HTTPException(429, "too many failed token attempts: try again later",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        if limiter is not None:
            limiter.failed(client)
        outcome("bad token")
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": 'Bearer realm="gpu-fleet-exporter"'})
    outcome("ok", logging.INFO)
