"""A real PACS: Debian's ``Orthanc`` with its DICOMweb plugin, on free ports.

Orthanc runs from a JSON configuration in the work folder (its storage and index there
too): DICOM (C-STORE, C-FIND) on one port under its own AE title, REST and DICOMweb
(QIDO-RS, WADO-RS, STOW-RS under ``/dicom-web/``) on another, without authentication on
this loopback address. ``modalities`` registers DICOM nodes it may talk to (the gateway).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from styleprobe.testing.ports import free_port, port_open
from styleprobe.testing.process import ServerError, ServerProcess

PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Orthanc:
    """A started Orthanc's addresses: its AE title and DICOM port, its REST root and its
    DICOMweb root."""

    ae_title: str
    dicom_port: int
    http_url: str

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def get_json(self, path: str) -> object:
        """``GET`` a REST path (e.g. ``/studies``) as JSON."""
        with urllib.request.urlopen(f"{self.http_url}{path}", timeout=10) as response:
            return json.loads(response.read())


def dicomweb_plugin() -> Path:
    """The DICOMweb plugin's shared library (Debian ``orthanc-dicomweb``)."""
    for folder in PLUGIN_FOLDERS:
        if (folder / DICOMWEB_PLUGIN).is_file():
            return folder / DICOMWEB_PLUGIN
    raise ServerError(f"{DICOMWEB_PLUGIN} not found in "
                      f"{', '.join(map(str, PLUGIN_FOLDERS))} (apt install orthanc-dicomweb)")


def orthanc_server(workdir: Path, ae_title: str = "ORTHANC",
                   modalities: dict[str, tuple[str, str, int]] | None = None
                   ) -> tuple[ServerProcess, Orthanc]:
    """An Orthanc (not yet started) and its addresses; ``modalities``: name ->
    (AE title, host, port) of the DICOM nodes it knows."""
    program = shutil.which("Orthanc")
    if program is None:
        raise ServerError("Orthanc is not installed (apt install orthanc orthanc-dicomweb)")
    dicom_port, http_port = free_port(), free_port()
    storage = workdir / "orthanc-storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "styleprobe-test-pacs", "StorageDirectory": str(storage),
        "IndexDirectory": str(storage), "DicomAet": ae_title, "DicomPort": dicom_port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True,
        "Plugins": [str(dicomweb_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "DicomModalities": {name: list(node) for name, node in (modalities or {}).items()},
        "StableAge": 1, "HttpServerThreads": 4,
    }, indent=2))
    http_url = f"http://127.0.0.1:{http_port}"

    def ready() -> bool:
        if not (port_open(http_port) and port_open(dicom_port)):
            return False
        try:
            with urllib.request.urlopen(f"{http_url}/system", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    process = ServerProcess("orthanc", [program, str(config)], ready,
                            workdir / "orthanc.log", stop_timeout_s=10)
    return process, Orthanc(ae_title, dicom_port, http_url)
