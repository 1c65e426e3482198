"""The HTTP API: health, metrics and ``/api/v1``, built by ``create_app``."""

from vetgateway.api.app import create_app

__all__ = ["create_app"]
