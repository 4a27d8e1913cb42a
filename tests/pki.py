"""Certificates made at test time with ``openssl``: a CA, a server certificate it signed for 127.0.0.1 and
localhost, a client certificate it signed, and an unrelated second CA with a client certificate of its own (for
clients that trust the wrong authority, and for client certificates the server must refuse). Used by the MQTT and
Kafka TLS tests."""

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
    ca_key, other_ca_key
        The CAs' keys, to issue more certificates (:func:`issue_client_cert`).
    client_cert, client_key
        A client certificate (``CN=citybrain-client``, extended key usage clientAuth) signed by ``ca``, and its
        unencrypted PKCS#8 key: what a broker requiring client certificates signed by ``ca`` accepts.
    other_client_cert, other_client_key
        The same signed by ``other_ca`` (``CN=citybrain-intruder``): what such a broker refuses.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    ca_key: Path
    other_ca_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


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


def _issue(d: Path, name: str, subject: str, ca: Path, ca_key: Path, extensions: str) -> tuple[Path, Path]:
    """A P-256 key and a two-day certificate for ``subject`` signed by ``ca`` with ``extensions`` (an
    ``openssl x509 -extfile`` text): (certificate, unencrypted PKCS#8 key) as ``d/{name}.pem``, ``d/{name}.key``."""
    key, csr, cert, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", subject, cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=d,
    )  # fmt: skip
    return cert, key


def issue_client_cert(
    d: Path, name: str, ca: Path, ca_key: Path, *, key_password: str | None = None
) -> tuple[Path, Path]:
    """A TLS client certificate (``CN=name``, extended key usage clientAuth) signed by ``ca``.

    Parameters
    ----------
    d
        An existing folder; the files are ``{name}.pem`` and ``{name}.key`` (plus the request and extension
        files), so ``name`` must be new in ``d``.
    name
        The certificate's common name and the files' stem.
    ca, ca_key
        The signing CA's certificate and key.
    key_password
        If given, the key is written encrypted with it (PKCS#8, AES-256: ``-----BEGIN ENCRYPTED PRIVATE
        KEY-----``).

    Returns
    -------
    tuple[Path, Path]
        The certificate and its key (PEM).
    """
    cert, key = _issue(
        d, name, f"/CN={name}", ca, ca_key,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n",
    )  # fmt: skip
    if key_password is not None:
        plain = key.with_suffix(".plain.key")
        key.rename(plain)
        _openssl("pkey", "-in", str(plain), "-aes256", "-passout", f"pass:{key_password}", "-out", str(key), cwd=d)
        plain.unlink()
    return cert, key


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, a client certificate it signed, and an
    unrelated second CA with a client certificate of its own, in ``d``.

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
    other_ca_key, other_ca = _make_ca(d, "other-ca")
    cert, key = _issue(
        d, "server", "/CN=localhost", ca, ca_key,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n",
    )  # fmt: skip
    client_cert, client_key = issue_client_cert(d, "citybrain-client", ca, ca_key)
    other_client_cert, other_client_key = issue_client_cert(d, "citybrain-intruder", other_ca, other_ca_key)
    return Pki(
        ca=ca,
        server_cert=cert,
        server_key=key,
        other_ca=other_ca,
        ca_key=ca_key,
        other_ca_key=other_ca_key,
        client_cert=client_cert,
        client_key=client_key,
        other_client_cert=other_client_cert,
        other_client_key=other_client_key,
    )
