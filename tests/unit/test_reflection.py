"""Server reflection answers as grpc.reflection.v1 as well as v1alpha: a raw v1 call, and
the real ``grpcurl`` describing both reflection services and ours."""

from __future__ import annotations

import asyncio
import subprocess

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from styleprobe.api import SERVICE_NAME
from styleprobe.orchestrator.reflection import V1_SERVICE, enable_reflection
from styleprobe.testing.process import venv_program

ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


async def ask(address: str) -> tuple[list[str], list[str]]:
    """The services listed through v1, and what grpcurl lists and describes."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            f"/{V1_SERVICE}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        responses = [response async for response in call(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")]))]
    listed = [service.name for service in responses[0].list_services_response.service]
    grpcurl = venv_program("grpcurl")
    outputs = []
    for args in (["list"], ["describe", V1_SERVICE], ["describe", SERVICE_NAME]):
        done = await asyncio.to_thread(subprocess.run, [grpcurl, "-plaintext", address, *args],
                                       capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return listed, outputs


async def serve_and_ask() -> tuple[list[str], list[str]]:
    server = grpc.aio.server()
    enable_reflection([SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await ask(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


def test_reflection_v1_and_v1alpha_are_served() -> None:
    listed, (grpcurl_list, v1, ours) = asyncio.run(serve_and_ask())
    assert {SERVICE_NAME, V1_SERVICE, ALPHA_SERVICE} <= set(listed)
    assert {SERVICE_NAME, V1_SERVICE, ALPHA_SERVICE} <= set(grpcurl_list.split())
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" \
        in v1, v1
    assert "rpc Explain ( .styleprobe.v1.ExplainRequest )" in ours, ours
