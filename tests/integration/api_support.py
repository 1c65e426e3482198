"""Building an app and issuing tokens for the API tests (helpers, not tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from vetgateway.api import create_app
from vetgateway.config import Settings
from vetgateway.store.db import Database
from vetgateway.store.models import Role
from vetgateway.store.tokens import create_token

__all__ = ["TestClient", "bearer", "build_app", "issue"]


def build_app(db: Database, data_dir: Path, **options: Any) -> FastAPI:
    """An app on ``db`` with an in-process broker unless ``broker_url`` says otherwise."""
    broker_url = options.pop("broker_url", "")
    settings = Settings(data_dir=data_dir, database_url=db.url, broker_url=broker_url)
    return create_app(settings, db, **options)


def issue(db: Database, role: Role, name: str | None = None) -> str:
    """A fresh token's plaintext, committed."""
    with db.session() as session:
        _token, plaintext = create_token(session, name or f"test {role.value}", role)
    return plaintext


def bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}
