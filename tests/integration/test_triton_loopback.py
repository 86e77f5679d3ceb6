"""The launcher's tritonserver listens on loopback unless told otherwise (issue 18: it
listened on every interface). A real tritonserver over an empty repository; its listening
sockets read from /proc/net/tcp."""

from __future__ import annotations

from pathlib import Path

import required
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.ports import free_port

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in /proc/net


def listening(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (as /proc writes them, hex) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_triton_listens_on_loopback_only(tmp_path: Path) -> None:
    required.package("pytriton")
    (tmp_path / "repository").mkdir()
    server = TritonProcess(tmp_path / "repository", free_port(), free_port(), free_port(),
                           tmp_path / "tritonserver.log")
    assert "--grpc-address=127.0.0.1" in server.command()
    with server:
        for port in (server.http_port, server.grpc_port, server.metrics_port):
            # 127.0.0.1, as IPv4 or IPv4-mapped IPv6, and nothing else
            assert listening(port) <= LOOPBACK and listening(port), port


def test_another_address_when_told(tmp_path: Path) -> None:
    server = TritonProcess(tmp_path, 1, 2, 3, address="0.0.0.0")
    command = server.command()
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0",
            "--metrics-address=0.0.0.0"} <= set(command)
    assert server.grpc_url == "127.0.0.1:2"  # reached over loopback from this machine
