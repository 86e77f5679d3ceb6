"""DICOM TLS (PS3.15 secure transport) for the gateway's DICOM port and its destination.

With a certificate and key, the gateway's C-STORE SCP accepts TLS only (TLS 1.2 or later),
and with a client CA asks every sender for a certificate that CA signed. With a
destination CA, results are sent over TLS, the destination's certificate checked against
that CA and its host name, presenting the gateway's own certificate when it has one.
"""

from __future__ import annotations

import ssl

from styleprobe.config import Settings


class DicomTLSError(ValueError):
    """The DICOM TLS settings do not fit together or name files that cannot be used."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the gateway's DICOM port; None for plain DICOM."""
    cert, key = settings.gateway_dicom_tls_cert, settings.gateway_dicom_tls_key
    if not cert and not key:
        if settings.gateway_dicom_tls_client_ca:
            raise DicomTLSError("STYLEPROBE_GATEWAY_DICOM_TLS_CLIENT_CA needs the gateway's "
                                "own certificate and key (..._DICOM_TLS_CERT and _KEY)")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key)
    if settings.gateway_dicom_tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca(context, settings.gateway_dicom_tls_client_ca)
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context results are sent to the destination with; None for plain DICOM."""
    if not settings.gateway_destination_tls_ca:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, settings.gateway_destination_tls_ca)
    if settings.gateway_dicom_tls_cert or settings.gateway_dicom_tls_key:
        _load_chain(context, settings.gateway_dicom_tls_cert, settings.gateway_dicom_tls_key)
    return context


def _load_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    if not (cert and key):
        raise DicomTLSError("DICOM TLS needs both STYLEPROBE_GATEWAY_DICOM_TLS_CERT and _KEY")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DicomTLSError(f"the gateway's DICOM TLS certificate {cert!r} or key {key!r} "
                            f"cannot be used: {exc}") from exc


def _load_ca(context: ssl.SSLContext, bundle: str) -> None:
    try:
        context.load_verify_locations(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise DicomTLSError(f"CA bundle {bundle!r} cannot be used: {exc}") from exc
