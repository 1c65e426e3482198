"""``/api/v1/whoami`` and token administration (admin only): list, issue, revoke."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database
from vetgateway.store import tokens as token_store
from vetgateway.store.db import Database
from vetgateway.store.models import Role

router = APIRouter()

Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
AnyRole = Annotated[Principal, Depends(require_role())]
Db = Annotated[Database, Depends(get_database)]


class WhoAmI(BaseModel):
    name: str
    role: Role


class TokenInfo(BaseModel):
    """A token as the API shows it: never its secret or its hash."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="who or what will use it")
    role: Role


class TokenIssued(TokenInfo):
    token: str = Field(description="the secret; shown only in this response, store it now")


@router.get("/whoami", tags=["auth"], summary="The calling token's name and role")
def whoami(principal: AnyRole) -> WhoAmI:
    return WhoAmI(name=principal.name, role=principal.role)


@router.get("/tokens", tags=["auth"], summary="All API tokens, revoked ones included")
def list_tokens(_admin: Admin, db: Db) -> list[TokenInfo]:
    with db.session(readonly=True) as session:
        return [TokenInfo.model_validate(t) for t in token_store.list_tokens(session)]


@router.post(
    "/tokens",
    tags=["auth"],
    status_code=status.HTTP_201_CREATED,
    summary="Issue a token; the secret is returned once",
)
def create_token(body: TokenCreate, admin: Admin, db: Db) -> TokenIssued:
    with db.session() as session:
        token, plaintext = token_store.create_token(
            session, body.name, body.role, actor=admin.actor
        )
        session.refresh(token)  # created_at comes from the database
        info = TokenInfo.model_validate(token)
    return TokenIssued(**info.model_dump(), token=plaintext)


@router.delete(
    "/tokens/{token_id}",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke a token (idempotent)",
    responses={404: {"description": "no such token"}},
)
def revoke_token(token_id: uuid.UUID, admin: Admin, db: Db) -> None:
    with db.session() as session:
        token = token_store.revoke_token(session, token_id, actor=admin.actor)
    if token is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such token")
