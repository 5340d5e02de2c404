"""Bearer-token auth of the explainer's API: a FastAPI security dependency and its OpenAPI scheme.

``Authorization: Bearer <token>`` is compared with the configured token in constant time, on sha256
digests so that the token's length does not leak either; anything else is ``UnauthorizedError``
(401 with ``WWW-Authenticate: Bearer``). ``fingerprint`` names the presenter in the audit log, never
with the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fastapi import Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from consumer.errors import AllocationError
from explainer.errors import UnauthorizedError

SCHEME = "bearer"


def presented(headers: Mapping[str, str]) -> str | None:
    """The token of a ``Bearer`` authorization header (scheme case-insensitive), else ``None``."""
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def fingerprint(token: str | None) -> str:
    """Who made a request, for the audit log: a short hash of the presented token, never the
    token."""
    return "anonymous" if not token else "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BearerAuth(SecurityBase):
    """``Security(auth)`` on a route: the presented token, or ``UnauthorizedError``. Being a
    ``SecurityBase``, it also gives the route the ``bearer`` HTTP scheme in the OpenAPI document.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise AllocationError("the explainer needs a bearer token (ALLOCATOR_EXPLAINER_TOKEN)")
        self.model = HTTPBearerModel(description="ALLOCATOR_EXPLAINER_TOKEN")
        self.scheme_name = SCHEME
        self._expected = _digest(token)

    def accepts(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(_digest(token), self._expected)

    async def __call__(self, request: Request) -> str:
        token = presented(request.headers)
        if token is None or not self.accepts(token):
            raise UnauthorizedError("missing or wrong bearer token")
        return token
