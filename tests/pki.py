"""A throw-away PKI made with the openssl command: a CA, a server certificate for 127.0.0.1, a
client certificate it signed, and a client certificate from a CA nobody trusts."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import in_ci


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=cwd)  # fmt: skip


def _leaf(name: str, ca: str, cwd: Path, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt", cwd=cwd)  # fmt: skip


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        if in_ci():
            pytest.fail("the openssl command is missing (CI=true)")
        pytest.skip("the openssl command is missing")
    _ca("ca", directory)
    _ca("rogue-ca", directory)
    _leaf("server", "ca", directory,
          "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    _leaf("client", "ca", directory, "extendedKeyUsage=clientAuth\n")
    _leaf("rogue-client", "rogue-ca", directory, "extendedKeyUsage=clientAuth\n")
    return Pki(directory)
