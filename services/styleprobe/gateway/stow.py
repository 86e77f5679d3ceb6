"""The gateway's DICOMweb inbound: a STOW-RS endpoint beside the C-STORE SCP.

``POST /studies`` (or ``/studies/{uid}``) with a ``multipart/related;
type="application/dicom"`` body stores its instances into the same series buffer as
C-STORE (routing sees the calling AE title ``DICOMWEB``). Every request needs
``Authorization: Bearer <STYLEPROBE_GATEWAY_DICOMWEB_TOKEN>``. The answer is the PS3.18
store response (``application/dicom+json``): the instances accepted (Referenced SOP
Sequence) and those that could not be read (Failed SOP Sequence); 200 when all were
accepted, 202 when some were not, 409 when none was.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import threading
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pydicom
from pydicom import Dataset

log = logging.getLogger(__name__)
CALLING_AE = "DICOMWEB"  # the calling AE title routing rules see for STOW-RS instances
MAX_BODY_BYTES = 1 << 30
PROCESSING_FAILURE = 0x0110  # PS3.18 Failure Reason: processing failure


class StowServer(ThreadingHTTPServer):
    """A STOW-RS endpoint on ``address`` handing each instance to ``accept``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str,
                 accept: Callable[[Dataset, str], None]) -> None:
        if not token:
            raise ValueError("the DICOMweb endpoint needs STYLEPROBE_GATEWAY_DICOMWEB_TOKEN")
        super().__init__(address, _Handler)
        self.token, self.accept = token, accept
        self.thread = threading.Thread(target=self.serve_forever, name="stow-rs", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever, if it runs
            self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server = cast(StowServer, self.server)
        if not self.path.rstrip("/").startswith("/studies"):
            return self._answer(HTTPStatus.NOT_FOUND, {"error": "POST to /studies"})
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
            return self._answer(HTTPStatus.UNAUTHORIZED, {"error": "a bearer token is needed"})
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length else
                                HTTPStatus.LENGTH_REQUIRED,
                                {"error": f"a body of 1 byte to {MAX_BODY_BYTES} is needed"})
        kind = self.headers.get("Content-Type", "")
        body = self.rfile.read(length)
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + body)
        if not message.is_multipart() or message.get_content_type() != "multipart/related":
            return self._answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                {"error": 'send multipart/related; type="application/dicom"'})
        stored, failed = [], []
        for part in message.iter_parts():
            data = part.get_payload(decode=True)
            try:
                ds = pydicom.dcmread(io.BytesIO(data if isinstance(data, bytes) else b""))
            except Exception:  # pydicom raises many types for what is no DICOM
                ds = None
            if ds is None or not all(k in ds for k in ("SOPInstanceUID", "SOPClassUID",
                                                        "SeriesInstanceUID")):
                failed.append(_reference(None))
                continue
            server.accept(ds, CALLING_AE)
            stored.append(_reference(ds))
        log.info("instances received by STOW-RS",
                 extra={"stored": len(stored), "failed": len(failed)})
        status = (HTTPStatus.OK if not failed else
                  HTTPStatus.ACCEPTED if stored else HTTPStatus.CONFLICT)
        response: dict[str, Any] = {}
        if stored:
            response["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            response["00081198"] = {"vr": "SQ", "Value": failed}
        return self._answer(status, response)

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("stow-rs request", extra={"request": format % args})


def _reference(ds: Dataset | None) -> dict[str, Any]:
    """An item of the store response: the instance's class and UID, or a failure."""
    if ds is None:
        return {"00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]}}
    return {"00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
            "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]}}
