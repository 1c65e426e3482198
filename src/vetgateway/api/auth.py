"""Bearer-token authentication and role checks for the API.

``Depends(require_role(Role.QC))`` gives an endpoint the caller's ``Principal`` or answers:

- 401 with ``WWW-Authenticate: Bearer`` when the header is missing, not ``Bearer <token>``, or the
  token is unknown or revoked (RFC 6750 §3; the same answer for all, so probing learns nothing);
- 403 when the token is valid but its role is not among those allowed. ``admin`` is allowed
  everywhere.

Use is recorded in ``api_tokens.last_used_at`` at most once a minute per token, in a separate
short write transaction, so ordinary requests stay read-only on the database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vetgateway.api.deps import get_database
from vetgateway.errors import StorageError
from vetgateway.store.db import Database
from vetgateway.store.models import Role
from vetgateway.store.models.base import utcnow
from vetgateway.store.tokens import TOUCH_INTERVAL, find_active_token, touch_token

log = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="vgw_<random>",
    description="An API token issued with `POST /api/v1/tokens` or `vetgateway tokens create`.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, name and role (never the secret)."""

    token_id: uuid.UUID
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How this caller is named in audit entries."""
        return f"api_token:{self.token_id}"


def _unauthorized(detail: str, *, invalid_token: bool = False) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


def authenticate(db: Database, plaintext: str) -> Principal | None:
    """The principal for an active token, or None. Records use at most once per minute."""
    with db.session(readonly=True) as session:
        token = find_active_token(session, plaintext)
        if token is None:
            return None
        principal = Principal(token_id=token.id, name=token.name, role=token.role)
        last_used = token.last_used_at
    now = utcnow()
    if last_used is None or now - last_used >= TOUCH_INTERVAL:
        try:
            with db.session() as session:
                touch_token(session, principal.token_id, now=now)
        except StorageError as exc:
            # Usage time is informational; failing the request over it would be worse.
            log.warning(
                "could not record token use",
                extra={"token_id": str(principal.token_id), "error": str(exc)},
            )
    return principal


def require_role(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting tokens whose role is in ``roles`` (any role if none are given)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    def dependency(
        request: Request,
        db: Annotated[Database, Depends(get_database)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        if credentials is None:
            raise _unauthorized("missing or malformed Authorization header; use 'Bearer <token>'")
        principal = authenticate(db, credentials.credentials)
        if principal is None:
            peer = request.client.host if request.client else None
            log.info("refused unknown or revoked token", extra={"peer": peer})
            raise _unauthorized("unknown or revoked token", invalid_token=True)
        if roles and principal.role not in allowed:
            names = ", ".join(sorted(role.value for role in allowed))
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role '{principal.role.value}' may not do this; needs one of: {names}",
            )
        return principal

    return dependency
