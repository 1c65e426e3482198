"""Typed access to what ``create_app`` put on ``app.state``, for use as FastAPI dependencies."""

from __future__ import annotations

from concurrent.futures import Executor

from fastapi import Request

from vetgateway.adapters.hl7.intake import Hl7Intake
from vetgateway.config import Settings
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.store.db import Database


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_paging_metrics(request: Request) -> PagingMetrics:
    metrics: PagingMetrics = request.app.state.paging_metrics
    return metrics


def get_hl7_intake(request: Request) -> Hl7Intake:
    intake: Hl7Intake = request.app.state.hl7_intake
    return intake


def get_intake_pool(request: Request) -> Executor:
    """Where blocking intake calls run (the inbox waits for its group commit there)."""
    pool: Executor = request.app.state.intake_pool
    return pool
