"""Certificates made at test time with ``openssl``: a CA, a server certificate it signed for 127.0.0.1 and
localhost, and an unrelated second CA (for clients that trust the wrong authority). Used by the MQTT and Kafka
TLS tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """The test's certificates (PEM files).

    Attributes
    ----------
    ca
        The CA citybrain is told to trust.
    server_cert, server_key
        The broker's certificate (for 127.0.0.1 and localhost, signed by ``ca``) and its PKCS#8 key.
    other_ca
        An unrelated CA, for a client that trusts the wrong authority.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    """Run ``openssl`` with ``args`` in ``cwd``; fail the test with its message if it fails."""
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"openssl {' '.join(args)} failed:\n{res.stderr}"


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    """A self-signed P-256 CA valid for two days: (key, certificate) in ``d``."""
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=citybrain test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    return key, cert


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated second CA, in ``d``.

    Parameters
    ----------
    d
        An existing, empty folder.

    Returns
    -------
    Pki
        The files made.
    """
    ca_key, ca = _make_ca(d, "ca")
    _, other_ca = _make_ca(d, "other-ca")
    key, csr, cert, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=d,
    )  # fmt: skip
    return Pki(ca, cert, key, other_ca)
