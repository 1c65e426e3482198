"""The server-side TLS context for MLLP (IHE ATNA node authentication when a client CA is set)."""

from __future__ import annotations

import ssl
from pathlib import Path

from vetgateway.errors import ConfigError


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ with our certificate; with ``client_ca``, clients must present one it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"MLLP TLS: cannot load certificate, key or client CA: {exc}") from exc
    return context
