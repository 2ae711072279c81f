"""Throwaway X.509 material for TLS tests, made with the ``openssl`` command line.

``make_certs(directory)`` writes a fresh CA, a server certificate for ``127.0.0.1``
(IP SAN) and ``localhost`` (DNS SAN), and a client certificate whose common name is a
user name, and returns their paths. Every call makes a *new* CA, so a second call in
another directory gives a CA that does not trust the first one's certificates (handy
for "wrong CA" tests). Keys are unencrypted P-256 keys; certificates are valid for two
days. ``make_client_cert(certs, name, valid_for=...)`` issues one more client
certificate from a CA made by ``make_certs``, optionally valid for only some seconds
(for certificate rotation and expiry tests). ``make_jwt_keys(directory)`` writes a
key pair for etcd's JWT auth tokens. Nothing here touches the network.
"""

from __future__ import annotations

import datetime
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertPaths", "OpenSSLNotFoundError", "make_certs", "make_client_cert", "make_jwt_keys"]

_DAYS = "2"

# The server certificate also carries clientAuth: etcd 3.5's built-in JSON gateway
# dials etcd's own gRPC server presenting the server certificate, which
# --client-cert-auth then verifies as a client certificate.
_CA_EXT = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


class OpenSSLNotFoundError(RuntimeError):
    """The ``openssl`` command is not installed."""


@dataclass(frozen=True)
class CertPaths:
    """Paths (as strings) of the files written by :func:`make_certs`."""

    directory: str
    ca_file: str
    ca_key_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str
    client_cn: str


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise OpenSSLNotFoundError(
            "the `openssl` command is needed to make test certificates: `apt-get install openssl`"
        )
    return path


def _run(*args: str) -> None:
    proc = subprocess.run(
        [_openssl(), *args], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}"
        )


def _new_key(path: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def _leaf(
    d: Path, name: str, cn: str, eku: str, san: str, ca_cert: Path, ca_key: Path
) -> tuple[Path, Path]:
    key, csr, cert, ext = (d / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    _new_key(key)
    _run("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
    ext.write_text(_LEAF_EXT.format(eku=eku, san=f"subjectAltName = {san}" if san else ""))
    _run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-set_serial", f"0x{_serial()}", "-days", _DAYS, "-sha256",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key


def _serial() -> str:
    return secrets.token_hex(12)


def make_jwt_keys(directory: str | Path) -> tuple[str, str]:
    """Write a P-256 key pair for etcd's JWT tokens (``sign-method=ES256``) into
    ``directory`` and return ``(private_key_path, public_key_path)``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = d / "jwt.key", d / "jwt.pub"
    _new_key(priv)
    _run("pkey", "-in", str(priv), "-pubout", "-out", str(pub))
    return str(priv), str(pub)


def make_certs(
    directory: str | Path, *, client_cn: str = "root", ca_cn: str = "etcdraft-test-ca"
) -> CertPaths:
    """Write a CA, a server and a client certificate into ``directory`` (created if
    needed) and return their paths.

    Args:
        directory: where to write ``ca.crt``/``ca.key``, ``server.crt``/``server.key``
            and ``client.crt``/``client.key``.
        client_cn: the client certificate's common name (etcd maps it to a user name).
        ca_cn: the CA's common name.

    Raises:
        OpenSSLNotFoundError: no ``openssl`` command.
        RuntimeError: an openssl step failed (its stderr is in the message).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, ca_cnf = d / "ca.crt", d / "ca.key", d / "ca.cnf"
    _new_key(ca_key)
    ca_cnf.write_text(_CA_EXT.format(cn=ca_cn))
    _run(
        "req", "-new", "-x509", "-key", str(ca_key), "-config", str(ca_cnf),
        "-extensions", "ext", "-set_serial", f"0x{_serial()}", "-days", _DAYS, "-sha256",
        "-out", str(ca_cert),
    )  # fmt: skip
    ca_cnf.unlink()
    server_cert, server_key = _leaf(
        d,
        "server",
        "127.0.0.1",
        "serverAuth, clientAuth",
        "IP:127.0.0.1, DNS:localhost",
        ca_cert,
        ca_key,
    )
    client_cert, client_key = _leaf(d, "client", client_cn, "clientAuth", "", ca_cert, ca_key)
    return CertPaths(
        directory=str(d),
        ca_file=str(ca_cert),
        ca_key_file=str(ca_key),
        server_cert_file=str(server_cert),
        server_key_file=str(server_key),
        client_cert_file=str(client_cert),
        client_key_file=str(client_key),
        client_cn=client_cn,
    )


# ``openssl ca`` (unlike ``openssl x509 -req`` of OpenSSL 3.0) takes exact start and
# end dates, to the second
_CA_CONF = """\
[ca]
default_ca = ca_default
[ca_default]
database = {d}/index.txt
new_certs_dir = {d}
serial = {d}/serial
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
"""


def _asn1_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


def make_client_cert(
    certs: CertPaths, name: str, *, cn: str | None = None, valid_for: float | None = None
) -> tuple[str, str]:
    """Issue a client certificate from ``certs``' CA into ``certs.directory`` as
    ``<name>.crt`` / ``<name>.key`` and return their paths.

    Args:
        cn: its common name (default: ``certs.client_cn``).
        valid_for: seconds from now until it expires (default: two days); it is valid
            from a minute ago, so a just-issued certificate is never "not yet valid".
    """
    d = Path(certs.directory)
    key, csr, cert, ext = (d / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    _new_key(key)
    _run("req", "-new", "-key", str(key), "-subj", f"/CN={cn or certs.client_cn}", "-out", str(csr))
    ext.write_text(_LEAF_EXT.format(eku="clientAuth", san=""))
    now = datetime.datetime.now(datetime.timezone.utc)
    seconds = valid_for if valid_for is not None else 2 * 86400
    work = d / f"{name}.ca"
    work.mkdir(exist_ok=True)
    (work / "index.txt").write_text("")
    (work / "serial").write_text(_serial() + "\n")
    conf = work / "ca.cnf"
    conf.write_text(_CA_CONF.format(d=work))
    _run(
        "ca", "-batch", "-notext", "-config", str(conf),
        "-cert", certs.ca_file, "-keyfile", certs.ca_key_file,
        "-startdate", _asn1_time(now - datetime.timedelta(minutes=1)),
        "-enddate", _asn1_time(now + datetime.timedelta(seconds=seconds)),
        "-extfile", str(ext), "-in", str(csr), "-out", str(cert),
    )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    csr.unlink()
    ext.unlink()
    return str(cert), str(key)
