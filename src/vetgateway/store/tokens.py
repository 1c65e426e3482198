"""API tokens: issue, look up, revoke; each change leaves an audit entry.

A token is ``vgw_`` plus 32 random bytes, URL-safe base64. Only its SHA-256 (hex) is stored, so a
copy of the database does not hand out working credentials; the plaintext exists once, in the
return value of ``create_token``. A plain hash (no salt, no key stretching) is enough because the
secret has 256 bits of entropy: there is nothing to guess or to look up in a table.

Like every store function these take a session and never commit: the caller owns the unit of work.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.store.audit import audit
from vetgateway.store.models import ApiToken, Role
from vetgateway.store.models.base import utcnow

TOKEN_PREFIX = "vgw_"  # noqa: S105 - a public marker, not a secret
TOUCH_INTERVAL = timedelta(minutes=1)
_TOKEN_SHAPE = re.compile(r"vgw_[A-Za-z0-9_-]{20,200}")


def hash_token(plaintext: str) -> str:
    """The stored form of a token: SHA-256 of its UTF-8 bytes, 64 lower-case hex digits."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def looks_like_token(plaintext: str) -> bool:
    """Cheap shape check, so garbage is refused without a database round trip."""
    return _TOKEN_SHAPE.fullmatch(plaintext) is not None


def create_token(
    session: Session, name: str, role: Role, *, actor: str = "system"
) -> tuple[ApiToken, str]:
    """Issue a token; returns the row and the plaintext, which is not recoverable afterwards."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, token_hash=hash_token(plaintext))
    session.add(token)
    session.flush()
    audit(
        session,
        actor=actor,
        action="token.created",
        entity_type="api_token",
        entity_id=str(token.id),
        details={"name": name, "role": role.value},
    )
    return token, plaintext


def find_active_token(session: Session, plaintext: str) -> ApiToken | None:
    """The unrevoked token whose hash matches ``plaintext``, or None.

    The lookup is by hash equality in the database; since the attacker does not control the hash,
    timing differences reveal nothing about stored secrets.
    """
    if not looks_like_token(plaintext):
        return None
    statement = sa.select(ApiToken).where(
        ApiToken.token_hash == hash_token(plaintext), ApiToken.revoked_at.is_(None)
    )
    return session.scalars(statement).one_or_none()


def get_token(session: Session, token_id: uuid.UUID) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def list_tokens(session: Session) -> Sequence[ApiToken]:
    """All tokens, revoked ones included, oldest first."""
    return session.scalars(sa.select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)).all()


def revoke_token(
    session: Session, token_id: uuid.UUID, *, actor: str = "system"
) -> ApiToken | None:
    """Revoke a token; None if there is no such token. Revoking twice changes nothing and is not
    audited again (the first entry already says when it happened)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit(
            session,
            actor=actor,
            action="token.revoked",
            entity_type="api_token",
            entity_id=str(token.id),
            details={"name": token.name, "role": token.role.value},
        )
        session.flush()
    return token


def touch_token(
    session: Session,
    token_id: uuid.UUID,
    *,
    now: datetime | None = None,
    interval: timedelta = TOUCH_INTERVAL,
) -> bool:
    """Record use of a token, at most once per ``interval``; True if a row was written.

    The condition lives in the UPDATE itself, so concurrent requests (or several gateway
    processes) racing on one token still write at most once per interval.
    """
    now = now or utcnow()
    statement = (
        sa.update(ApiToken)
        .where(ApiToken.id == token_id)
        .where(sa.or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - interval))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(statement)
    return bool(getattr(result, "rowcount", 0))
