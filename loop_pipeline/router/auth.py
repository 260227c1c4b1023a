"""API keys as Bearer tokens, stored only as sha256 hex digests.

The token is hashed and compared with every stored digest in constant time; neither the header nor
the token is ever logged, traced or used as a metric label.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from loop_pipeline.router.errors import unauthorized


def key_digest(key: str) -> str:
    """What the config stores for ``key``: ``sha256(key)`` as hex (``loop serve`` docs show how)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    def __init__(self, digests: Sequence[str]):
        self._digests = tuple(d.lower().encode("ascii") for d in digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> None:
        """Raise a 401 RouterError unless ``authorization`` is ``Bearer <a known key>``."""
        if not self.enabled:
            return
        if not authorization:
            raise unauthorized("You didn't provide an API key: send it as 'Authorization: Bearer <key>'.")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("The Authorization header must be 'Bearer <key>'.")
        digest = key_digest(token).encode("ascii")
        # Compare with all of them, so the time taken says nothing about which one was close.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise unauthorized("Incorrect API key provided.")
