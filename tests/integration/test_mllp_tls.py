"""MLLP over TLS with real certificates and a real TLS client (R16)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.mllp_peer import MllpPeer, msa
from tests.mllp_server import ServedMllp
from tests.pki import Pki, make_pki
from tests.waiting import wait_until
from vetgateway.adapters.mllp.tls import server_context
from vetgateway.store.db import Database
from vetgateway.store.models import InboundMessage

ORU = b"MSH|^~\\&|LAB|IDEXX|VG|CLINIC|20261126||ORU^R01|TLS1|P|2.5.1\rPID|1||P1\r"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: Pki, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.path("ca.crt"))
    if cert is not None:
        context.load_cert_chain(pki.path(f"{cert}.crt"), pki.path(f"{cert}.key"))
    return context


def stored(db: Database) -> int:
    with db.session(readonly=True) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) or 0


@pytest.fixture
def mutual_tls(db: Database, pki: Pki):
    tls = server_context(pki.path("server.crt"), pki.path("server.key"), pki.path("ca.crt"))
    with ServedMllp(db, tls=tls) as served:
        yield served


def test_trusted_client_certificate_is_served(mutual_tls: ServedMllp, pki: Pki) -> None:
    tls = client_context(pki, "client")
    with MllpPeer(mutual_tls.host, mutual_tls.port, tls=tls, server_hostname="127.0.0.1") as peer:
        assert msa(peer.exchange(ORU))[1:3] == ["AA", "TLS1"]
    assert stored(mutual_tls.db) == 1


@pytest.mark.parametrize("cert", ["rogue-client", None], ids=["untrusted-cert", "no-cert"])
def test_r16_untrusted_or_missing_client_certificate_is_refused(
    mutual_tls: ServedMllp, pki: Pki, cert: str | None
) -> None:
    tls = client_context(pki, cert)
    host, port = mutual_tls.host, mutual_tls.port
    # TLS 1.3 reports the refusal on the first read after the handshake, so either may raise.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        MllpPeer(host, port, tls=tls, server_hostname="127.0.0.1") as peer,
    ):
        peer.exchange(ORU)
    # the client may see the refusal before the server has finished recording it
    wait_until(lambda: mutual_tls.incidents, what="the refusal reported")
    assert [kind for kind, _, _ in mutual_tls.incidents] == ["tls_refused"]
    assert stored(mutual_tls.db) == 0


def test_r16_plaintext_client_on_the_tls_port_is_refused(mutual_tls: ServedMllp) -> None:
    with MllpPeer(mutual_tls.host, mutual_tls.port) as peer:
        peer.send(ORU)
        assert peer.closed_by_gateway()
    wait_until(lambda: mutual_tls.incidents, what="the refusal reported")
    assert stored(mutual_tls.db) == 0
    ((kind, _, detail),) = mutual_tls.incidents
    assert kind == "tls_refused"
    assert "TLS handshake refused" in detail


def test_server_only_tls_accepts_clients_without_certificates(db: Database, pki: Pki) -> None:
    tls = server_context(pki.path("server.crt"), pki.path("server.key"))
    with ServedMllp(db, tls=tls) as served:
        context = client_context(pki, None)
        with MllpPeer(served.host, served.port, tls=context, server_hostname="127.0.0.1") as peer:
            assert msa(peer.exchange(ORU))[1] == "AA"


def test_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    from vetgateway.errors import ConfigError

    with pytest.raises(ConfigError, match="MLLP TLS"):
        server_context(tmp_path / "missing.crt", tmp_path / "missing.key")
