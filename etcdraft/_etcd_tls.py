"""TLS for the gRPC channels: one trust store and one client identity for every call.

The server is verified against ``tls_ca_file`` when it is set, otherwise against the
operating system's trust store *as Python's* :mod:`ssl` *module finds it*
(``ssl.get_default_verify_paths()``, so ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and a private
CA installed in the OS store work), never against grpcio's bundled roots alone. The
files are read each time a connection is made, so certificates replaced on disk take
effect on the next connection without a restart.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from etcdraft.errors import ConfigError

__all__ = ["TlsSettings", "system_ca_bundle"]

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def system_ca_bundle() -> bytes:
    """The PEM certificates of the trust store Python's ``ssl`` module uses by default.

    Reads ``SSL_CERT_FILE`` (or OpenSSL's default CA file) and every PEM file in
    ``SSL_CERT_DIR`` (or OpenSSL's default CA directory)."""
    paths = ssl.get_default_verify_paths()
    chunks: list[bytes] = []
    if paths.cafile and os.path.isfile(paths.cafile):
        chunks.append(Path(paths.cafile).read_bytes())
    if paths.capath and os.path.isdir(paths.capath):
        for entry in sorted(os.scandir(paths.capath), key=lambda e: e.name):
            try:
                if not entry.is_file():
                    continue
                data = Path(entry.path).read_bytes()
            except OSError:
                continue
            if _PEM_BEGIN in data:
                chunks.append(data)
    return b"\n".join(chunks)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    server_name: str | None = None

    def root_certificates(self) -> bytes:
        if self.ca_file:
            return Path(self.ca_file).read_bytes()
        bundle = system_ca_bundle()
        if not bundle:
            raise ConfigError(
                "no CA certificates to verify etcd's server with: set tls_ca_file, or "
                "install the CA in the system trust store (or point SSL_CERT_FILE at it)",
                field="tls_ca_file",
            )
        return bundle

    def private_key(self) -> bytes | None:
        if not self.key_file:
            return None
        data = Path(self.key_file).read_bytes()
        if self.key_password is None:
            if b"ENCRYPTED" in data:
                raise ConfigError(
                    f"tls_key_file {self.key_file!r} is encrypted: set tls_key_password",
                    field="tls_key_password",
                )
            return data
        return _decrypt_key(data, self.key_password, self.key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        chain = Path(self.cert_file).read_bytes() if self.cert_file else None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates(),
            private_key=self.private_key() if chain else None,
            certificate_chain=chain,
        )


def _decrypt_key(data: bytes, password: str, path: str) -> bytes:
    """An encrypted PEM key, decrypted in memory (grpcio takes no key password)."""
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # pragma: no cover - the tls extra is missing
        raise ConfigError(
            "an encrypted tls_key_file needs the 'cryptography' package: "
            "pip install 'etcdraft[tls]'",
            field="tls_key_password",
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot decrypt tls_key_file {path!r} with tls_key_password: {exc}",
            field="tls_key_password",
        ) from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
