"""TLS and mTLS of the orchestrator, end to end: certificates from CAs made in the test, the
real orchestrator (in this process, on a real Redis) and real gRPC clients over loopback.

A client that trusts the server's CA gets through; a plaintext client, and a client that
trusts another CA, are refused at the handshake; with mTLS, so are a client without a
certificate and one whose certificate another CA signed. Tokens over plaintext are refused
unless the server listens on loopback or ``STYLEPROBE_GRPC_PLAINTEXT_TOKENS`` allows them.
The command line's ``--tls``/``--ca``/``--cert``/``--key`` reach a TLS server.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from styleprobe.api import pb, rpc
from styleprobe.cli import run
from styleprobe.config import Settings
from styleprobe.healthcheck import check_orchestrator
from styleprobe.orchestrator.server import Orchestrator
from styleprobe.testing.certs import TestCA
from styleprobe.testing.ports import free_port
from styleprobe.testing.redis import redis_server
from styleprobe.tls import ClientTLS, TLSConfigError, open_channel

TOKEN = "tls-test-token"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestCA]:
    folder = tmp_path_factory.mktemp("certs")
    return {"hospital": TestCA(folder, "hospital"), "other": TestCA(folder, "other")}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, url = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def base_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, store_dir=str(tmp_path / "store"), api_tokens=TOKEN,
                    grpc_listen=f"127.0.0.1:{free_port()}", health_interval_s=0.5,
                    auth_log_interval_s=3600.0)


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The orchestrator of ``settings`` running in a thread; the address to call."""
    ready, failed = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            orchestrator = Orchestrator(settings)
        except Exception as exc:
            failed.append(exc)
            ready.set()
            return
        task = asyncio.create_task(orchestrator.run(stop))
        await asyncio.sleep(0.2)  # server.start() has run
        ready.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    if failed:
        thread.join()
        raise failed[0]
    try:
        yield f"127.0.0.1:{settings.grpc_listen.rpartition(':')[2]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def get_job(address: str, tls: ClientTLS | None, token: str = TOKEN) -> grpc.StatusCode:
    """The status of GetJob for an unknown job: NOT_FOUND once authenticated. Each call
    opens a connection of its own (no subchannel shared with an earlier call)."""
    with open_channel(address, tls, [("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            rpc.StyleProbeStub(channel).GetJob(
                pb.GetJobRequest(job_id=uuid.uuid4().hex),
                metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def tls_settings(settings: Settings, ca: TestCA, client_ca: TestCA | None = None
                 ) -> Settings:
    server = ca.issue("orchestrator")
    return replace(settings, grpc_tls_cert=str(server.cert), grpc_tls_key=str(server.key),
                   grpc_tls_client_ca=str(client_ca.cert) if client_ca else "")


def test_tls_serves_clients_that_trust_its_ca(base_settings: Settings,
                                              cas: dict[str, TestCA]) -> None:
    hospital, other = cas["hospital"], cas["other"]
    with serving(tls_settings(base_settings, hospital)) as address:
        assert get_job(address, ClientTLS(ca=str(hospital.cert))) == grpc.StatusCode.NOT_FOUND
        assert get_job(address, ClientTLS(ca=str(hospital.cert)), token="wrong") \
            == grpc.StatusCode.UNAUTHENTICATED
        # refused at the handshake: no call reaches the service
        assert get_job(address, None) == grpc.StatusCode.UNAVAILABLE
        assert get_job(address, ClientTLS(ca=str(other.cert))) == grpc.StatusCode.UNAVAILABLE


def test_a_renewed_certificate_is_served_without_a_restart(
        base_settings: Settings, cas: dict[str, TestCA], tmp_path: Path) -> None:
    hospital, other = cas["hospital"], cas["other"]
    settings = tls_settings(base_settings, hospital)
    with serving(settings) as address:
        assert get_job(address, ClientTLS(ca=str(hospital.cert))) == grpc.StatusCode.NOT_FOUND
        renewed = other.issue("orchestrator-renewed")
        for source, target in ((renewed.key, settings.grpc_tls_key),
                               (renewed.cert, settings.grpc_tls_cert)):
            staged = tmp_path / "staged.pem"
            staged.write_bytes(source.read_bytes())
            staged.replace(target)  # as a Secret volume swaps its files
        # new connections get the new certificate (each call here opens its own channel)
        assert get_job(address, ClientTLS(ca=str(other.cert))) == grpc.StatusCode.NOT_FOUND
        assert get_job(address, ClientTLS(ca=str(hospital.cert))) \
            == grpc.StatusCode.UNAVAILABLE


def test_mtls_needs_a_client_certificate_its_ca_signed(base_settings: Settings,
                                                       cas: dict[str, TestCA]) -> None:
    hospital, other = cas["hospital"], cas["other"]
    ca = str(hospital.cert)
    mine, foreign = hospital.issue("gateway", client=True), other.issue("intruder", client=True)
    with serving(tls_settings(base_settings, hospital, client_ca=hospital)) as address:
        assert get_job(address, ClientTLS(ca=ca, cert=str(mine.cert), key=str(mine.key))) \
            == grpc.StatusCode.NOT_FOUND
        assert get_job(address, ClientTLS(ca=ca)) == grpc.StatusCode.UNAVAILABLE
        assert get_job(address, ClientTLS(ca=ca, cert=str(foreign.cert),
                                          key=str(foreign.key))) == grpc.StatusCode.UNAVAILABLE
        assert get_job(address, None) == grpc.StatusCode.UNAVAILABLE


def test_tokens_over_plaintext_only_on_loopback_or_when_allowed(
        base_settings: Settings) -> None:
    # the embedded and development default: plaintext on loopback
    with serving(base_settings) as address:
        assert get_job(address, None) == grpc.StatusCode.NOT_FOUND
    everywhere = replace(base_settings, grpc_listen=f"0.0.0.0:{free_port()}")
    with serving(everywhere) as address:
        assert get_job(address, None) == grpc.StatusCode.UNAUTHENTICATED
    allowed = replace(everywhere, grpc_listen=f"0.0.0.0:{free_port()}",
                      grpc_plaintext_tokens=True)
    with serving(allowed) as address:
        assert get_job(address, None) == grpc.StatusCode.NOT_FOUND


def test_plaintext_refusal_says_tls(base_settings: Settings) -> None:
    everywhere = replace(base_settings, grpc_listen=f"0.0.0.0:{free_port()}")
    with (serving(everywhere) as address, open_channel(address) as channel,
          pytest.raises(grpc.RpcError) as refused):
        rpc.StyleProbeStub(channel).GetJob(
            pb.GetJobRequest(job_id="x"), metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "TLS" in (refused.value.details() or "")


def test_health_listener_answers_probes_of_a_tls_server(base_settings: Settings,
                                                        cas: dict[str, TestCA]) -> None:
    settings = replace(tls_settings(base_settings, cas["hospital"]),
                       grpc_health_listen=f"127.0.0.1:{free_port()}")
    with serving(settings):
        deadline = time.monotonic() + 20
        while check_orchestrator(settings) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert check_orchestrator(settings) == ""


def test_unreadable_tls_files_stop_the_server_at_start(base_settings: Settings,
                                                       tmp_path: Path) -> None:
    missing = replace(base_settings, grpc_tls_cert=str(tmp_path / "none.pem"),
                      grpc_tls_key=str(tmp_path / "none-key.pem"))
    with pytest.raises(TLSConfigError, match="cannot be read"), serving(missing):
        pass
    half = replace(base_settings, grpc_tls_cert=str(tmp_path / "c.pem"))
    with pytest.raises(TLSConfigError, match="go together"), serving(half):
        pass


def test_cli_speaks_tls_and_mtls(base_settings: Settings, cas: dict[str, TestCA],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    hospital = cas["hospital"]
    mine = hospital.issue("cli", client=True)
    settings = tls_settings(base_settings, hospital, client_ca=hospital)
    job = uuid.uuid4().hex
    with serving(settings) as address:
        common = ["cohort", "download", job, "--server", address, "--token", TOKEN]
        code = run([*common, "--ca", str(hospital.cert), "--cert", str(mine.cert),
                    "--key", str(mine.key)])
        assert code == 2 and "NOT_FOUND" in capsys.readouterr().err  # through TLS and auth
        assert run([*common, "--tls", "--ca", str(hospital.cert)]) == 2
        assert "UNAVAILABLE" in capsys.readouterr().err  # no client certificate
        assert run([*common, "--ca", str(hospital.cert), "--cert", str(mine.cert)]) == 2
        assert "--key" in capsys.readouterr().err
