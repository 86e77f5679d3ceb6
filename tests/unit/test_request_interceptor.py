"""The orchestrator's request interceptor: a request id per call (the client's or a new
one) in the reply's metadata and in every log line of the call, and the call counted and
timed by method and code."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from styleprobe.logs import configure_logging
from styleprobe.orchestrator.interceptors import REQUEST_ID, RequestInterceptor

CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)
    yield buffer
    root.handlers[:], root.level = saved


def calls(code: str) -> float:
    return REGISTRY.get_sample_value("styleprobe_grpc_requests_total",
                                     {"method": CHECK, "code": code}) or 0.0


async def call_health(metadata: tuple[tuple[str, str], ...], service: str
                      ) -> tuple[str, grpc.StatusCode]:
    server = grpc.aio.server(interceptors=[RequestInterceptor()])
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), metadata=metadata, timeout=5)
            initial = dict(await call.initial_metadata())
            with contextlib.suppress(grpc.aio.AioRpcError):  # NOT_FOUND: looked at below
                await call
            return initial[REQUEST_ID], await call.code()
    finally:
        await server.stop(None)


def test_calls_carry_a_request_id_and_are_counted_by_code(log_lines: io.StringIO) -> None:
    ok, not_found = calls("OK"), calls("NOT_FOUND")
    rid, code = asyncio.run(call_health(((REQUEST_ID, "r-42"),), ""))
    assert (rid, code) == ("r-42", grpc.StatusCode.OK)
    rid, code = asyncio.run(call_health((), "no.such.Service"))
    assert code == grpc.StatusCode.NOT_FOUND and len(rid) == 32  # a new id for the call
    assert (calls("OK"), calls("NOT_FOUND")) == (ok + 1, not_found + 1)
    access = [json.loads(line) for line in log_lines.getvalue().splitlines()
              if '"rpc"' in line]
    assert [(a["request_id"], a["method"], a["code"]) for a in access] == [
        ("r-42", CHECK, "OK"), (rid, CHECK, "NOT_FOUND")]
