"""TLS on every hop: the orchestrator's gRPC API, and the connections to Redis, S3, Triton.

- The orchestrator serves TLS from ``STYLEPROBE_GRPC_TLS_CERT`` and ``_KEY`` (PEM files),
  and with ``STYLEPROBE_GRPC_TLS_CLIENT_CA`` asks every client for a certificate that CA
  signed (mTLS): :func:`server_credentials`. Files that change (a renewed certificate) are
  read again at the next handshake: new connections get the new certificate, no restart.
- Bearer tokens travel only over TLS: a plaintext call with a token is refused, unless the
  orchestrator listens on a loopback address (the embedded and development default, where
  nothing leaves the machine) or ``STYLEPROBE_GRPC_PLAINTEXT_TOKENS`` says so
  (:func:`tokens_need_tls`).
- Every client of the API gets its channel from :func:`open_channel` (the command line,
  the DICOM gateway): plaintext, or TLS against a CA bundle with an optional client
  certificate (:class:`ClientTLS`).
- Redis over ``rediss://``, S3 over HTTPS and Triton over TLS verify the server's
  certificate against ``STYLEPROBE_TLS_CA_BUNDLE`` (a hospital's private CA) or, when it is
  empty, the system's roots: :func:`redis_ssl`, :func:`triton_tls`, and the S3 store's
  own HTTP client (:class:`styleprobe.storage.s3.S3Store`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from styleprobe.config import Settings

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class TLSConfigError(ValueError):
    """A TLS setting names a file that cannot be read, or settings that do not fit."""


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file; :class:`TLSConfigError` naming ``what`` if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{what} {path!r} cannot be read: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise TLSConfigError(f"{what} {path!r} is not a PEM file")
    return data


@dataclass(frozen=True)
class ClientTLS:
    """How a client verifies the orchestrator: ``ca``, a PEM bundle ('': the system's
    roots), and for mTLS its own certificate ``cert`` and key ``key`` (PEM files)."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files (read now)."""
        if bool(self.cert) != bool(self.key):
            raise TLSConfigError("a client certificate needs its key, and a key its "
                                 "certificate (--cert and --key together)")
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "CA bundle") if self.ca else None,
            private_key=read_pem(self.key, "client key") if self.key else None,
            certificate_chain=read_pem(self.cert, "client certificate") if self.cert else None)


def open_channel(address: str, tls: ClientTLS | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to the orchestrator at ``address``: TLS when ``tls`` is given, else
    plaintext (the service then accepts tokens only on a loopback address)."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=list(options))


def is_loopback(listen: str) -> bool:
    """Whether the ``host:port`` (or ``[v6]:port``) listen address is on loopback only."""
    host = listen.rpartition(":")[0].strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or a wildcard: reachable from elsewhere


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The orchestrator's TLS credentials (``None``: plaintext); mTLS with a client CA."""
    cert, key, client_ca = (settings.grpc_tls_cert, settings.grpc_tls_key,
                            settings.grpc_tls_client_ca)
    if not cert and not key:
        if client_ca:
            raise TLSConfigError("STYLEPROBE_GRPC_TLS_CLIENT_CA needs STYLEPROBE_GRPC_TLS_CERT "
                                 "and STYLEPROBE_GRPC_TLS_KEY (mTLS is TLS first)")
        return None
    if not cert or not key:
        raise TLSConfigError("STYLEPROBE_GRPC_TLS_CERT and STYLEPROBE_GRPC_TLS_KEY go together")
    files = CertificateFiles(cert, key, client_ca)
    # grpc's stubs leave out the None (no change) that a fetcher may answer
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(), files.fetch,  # type: ignore[arg-type]
        require_client_authentication=bool(client_ca))


class CertificateFiles:
    """The orchestrator's certificate, key and client CA files, read again when one of them
    changes (a Kubernetes Secret volume swaps them all at once)."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = self._stamps()

    def _stamps(self) -> tuple[tuple[int, int], ...] | None:
        try:
            return tuple((s.st_mtime_ns, s.st_size) for s in
                         (os.stat(p) for p in (self.cert, self.key, self.client_ca) if p))
        except OSError:
            return None  # being replaced: keep serving the files read last

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files as a gRPC certificate configuration (read now)."""
        pair = (read_pem(self.key, "STYLEPROBE_GRPC_TLS_KEY"),
                read_pem(self.cert, "STYLEPROBE_GRPC_TLS_CERT"))
        roots = (read_pem(self.client_ca, "STYLEPROBE_GRPC_TLS_CLIENT_CA")
                 if self.client_ca else None)
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if the files changed since last read, else ``None`` (gRPC
        calls this before each handshake)."""
        stamp = self._stamps()
        if stamp is None or stamp == self._stamp:
            return None
        try:
            configuration = self.configuration()
        except TLSConfigError as exc:
            log.warning("TLS files unreadable; serving the previous ones",
                        extra={"error": str(exc)})
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded", extra={"cert": self.cert})
        return configuration


def tokens_need_tls(settings: Settings) -> bool:
    """Whether the orchestrator refuses bearer tokens sent over plaintext."""
    return not (settings.grpc_plaintext_tokens or is_loopback(settings.grpc_listen))


def redis_ssl(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of a verified TLS connection to a ``rediss://`` Redis (for
    redis-py's clients and kombu's ``broker_use_ssl``); empty for ``redis://``."""
    if urlsplit(settings.redis_url).scheme != "rediss":
        return {}
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True,
            "ssl_ca_certs": _bundle(settings)}


def triton_tls(settings: Settings) -> dict[str, Any]:
    """``tritonclient.grpc.InferenceServerClient`` arguments for Triton over TLS."""
    if not settings.triton_tls:
        return {}
    return {"ssl": True, "root_certificates": _bundle(settings)}


def _bundle(settings: Settings) -> str | None:
    """The configured CA bundle, checked readable; ``None``: the system's roots."""
    if not settings.tls_ca_bundle:
        return None
    read_pem(settings.tls_ca_bundle, "STYLEPROBE_TLS_CA_BUNDLE")
    return settings.tls_ca_bundle
