"""What every ``vetgateway`` command shares: failing with one line, and loading settings."""

from __future__ import annotations

from typing import NoReturn

import typer

from vetgateway.config import Settings, load_settings
from vetgateway.errors import ConfigError
from vetgateway.logs import configure_logging

__all__ = ["fail", "load_settings_or_fail"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``vetgateway: message`` on stderr and exit with ``code`` (2: bad usage)."""
    typer.echo(f"vetgateway: {message}", err=True)
    raise typer.Exit(code)


def load_settings_or_fail() -> Settings:
    """The validated settings with logging configured, or exit 2 naming the bad setting."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    return settings
