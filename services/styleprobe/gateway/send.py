"""Sending results to their destination: C-STORE (DIMSE) and/or STOW-RS (DICOMweb)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

log = logging.getLogger(__name__)
SUCCESS = 0x0000


class SendError(RuntimeError):
    """The destination refused the results or could not be reached."""


@dataclass(frozen=True)
class Destination:
    """A DICOM node: ``AET@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        title, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and title and host and port.isdigit()):
            raise ValueError(f"STYLEPROBE_GATEWAY_DESTINATION {text!r} is not AET@host:port")
        return cls(title, host, int(port))


def c_store(datasets: list[Dataset], destination: Destination, calling_ae: str,
            tls: ssl.SSLContext | None = None) -> None:
    """Send ``datasets`` over one association (over TLS with ``tls``, the destination's
    host name checked); :class:`SendError` unless each is stored."""
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         tls_args=(tls, destination.host) if tls else None)
    if not assoc.is_established:
        raise SendError(f"no association with {destination.ae_title} at "
                        f"{destination.host}:{destination.port}")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != SUCCESS:
                raise SendError(f"{destination.ae_title} answered C-STORE with status "
                                f"{code if code is None else hex(code)}")
    finally:
        assoc.release()
    log.info("results stored by C-STORE", extra={"instances": len(datasets),
                                                  "destination": destination.ae_title})


def stow(datasets: list[Dataset], url: str) -> None:
    """Store ``datasets`` by STOW-RS at the DICOMweb root ``url``."""
    from dicomweb_client.api import DICOMwebClient

    try:
        DICOMwebClient(url=url).store_instances(datasets)
    except Exception as exc:  # requests' and the client's errors alike
        raise SendError(f"STOW-RS to {url} failed: {exc}") from exc
    log.info("results stored by STOW-RS", extra={"instances": len(datasets)})
