"""Typed access to what ``create_app`` put on ``app.state``, for use as FastAPI dependencies."""

from __future__ import annotations

from fastapi import Request

from vetgateway.config import Settings
from vetgateway.store.db import Database


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
