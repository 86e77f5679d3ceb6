"""Server interceptors: request ids, metrics and access logs; bearer-token authentication.

:class:`RequestInterceptor` (outermost) gives every call a request id (the client's
``x-request-id`` or a new one), answers it in the initial metadata, and counts and times
the call by method and status code (Prometheus) with one log line per call (but for
refused calls: those are counted, see :mod:`.refusals`).
:class:`AuthInterceptor` refuses a call without ``authorization: Bearer <token>`` naming a
configured token with UNAUTHENTICATED, and, where tokens need TLS
(:func:`styleprobe.tls.tokens_need_tls`), any call that did not come over TLS; refusals
beyond a peer's or a token's budget are held before they are answered
(:class:`.refusals.RefusalLimiter`). Health checks and reflection are open, so probes and
``grpcurl`` work without a token.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

from styleprobe.logs import log_context
from styleprobe.metrics import observe_rpc
from styleprobe.orchestrator.refusals import RefusalLimiter

log = logging.getLogger("styleprobe.orchestrator.access")
REQUEST_ID = "x-request-id"
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]
# generic in grpc's stubs only, so written as strings (never evaluated at run time)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return ""


def _rewrap(handler: Handler,
            unary: Callable[[Behaviour], Behaviour],
            stream: Callable[[Behaviour], Behaviour]) -> Handler:
    """``handler`` with its behaviour wrapped (unary-request methods only: the API's kind).

    On the aio server a handler's behaviours are coroutine (or async generator) functions
    taking an aio context; grpc's stubs type them for the sync server, hence the casts.
    """
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary(cast(Behaviour, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream(cast(Behaviour, handler.unary_stream)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return handler  # streaming requests (reflection) pass through unwrapped


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, call counts and latencies by method and code, and an access log."""

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method

        def unary(behaviour: Behaviour) -> Behaviour:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with log_context(request_id=await self._begin(context)):
                    started = time.perf_counter()
                    try:
                        return await behaviour(request, context)
                    finally:
                        self._end(method, context, started)
            return wrapped

        def stream(behaviour: Behaviour) -> Behaviour:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[Any]:
                with log_context(request_id=await self._begin(context)):
                    started = time.perf_counter()
                    try:
                        async for response in behaviour(request, context):
                            yield response
                    finally:
                        self._end(method, context, started)
            return wrapped

        return _rewrap(handler, unary, stream)

    @staticmethod
    async def _begin(context: grpc.aio.ServicerContext) -> str:
        """The call's request id (the client's, or a new one), sent back to the client."""
        rid = _metadata(context, REQUEST_ID) or uuid.uuid4().hex
        await context.send_initial_metadata(((REQUEST_ID, rid),))
        return rid

    @staticmethod
    def _end(method: str, context: grpc.aio.ServicerContext, started: float) -> None:
        seconds = time.perf_counter() - started
        code = context.code() or grpc.StatusCode.OK
        if context.cancelled() and code == grpc.StatusCode.OK:
            code = grpc.StatusCode.CANCELLED
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        observe_rpc(method, name, seconds)
        if code != grpc.StatusCode.UNAUTHENTICATED:  # refusals: counts at intervals
            log.info("rpc", extra={"method": method, "code": name,
                                   "seconds": round(seconds, 4)})


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer-token authentication against a fixed set of tokens; with ``require_tls``,
    only over TLS. Refusals go through ``limiter`` (a default one if not given)."""

    def __init__(self, tokens: list[str], require_tls: bool = False,
                 limiter: RefusalLimiter | None = None) -> None:
        if not tokens:
            raise ValueError("no API tokens configured (STYLEPROBE_API_TOKENS or "
                             "STYLEPROBE_API_TOKENS_FILE)")
        self._tokens = [t.encode() for t in tokens]
        self.require_tls = require_tls
        self.limiter = limiter or RefusalLimiter()

    def allows(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        # Compare with every token, in constant time, so timing tells nothing.
        return any([hmac.compare_digest(given, t) for t in self._tokens])

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler

        def unary(behaviour: Behaviour) -> Behaviour:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._guard(context)
                return await behaviour(request, context)
            return wrapped

        def stream(behaviour: Behaviour) -> Behaviour:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[Any]:
                await self._guard(context)
                async for response in behaviour(request, context):
                    yield response
            return wrapped

        return _rewrap(handler, unary, stream)

    async def _guard(self, context: grpc.aio.ServicerContext) -> None:
        """Return if the call may go on; otherwise abort it UNAUTHENTICATED, held first
        if its peer or token is over its budget of refusals."""
        authorization = _metadata(context, "authorization")
        if self.require_tls and not _over_tls(context):
            kind, message = "plaintext", ("this server accepts tokens over TLS only: "
                                          "connect with TLS")
        elif self.allows(authorization):
            return
        elif not authorization:
            kind, message = "missing", ("missing token: send the metadata "
                                        "'authorization: Bearer <token>'")
        else:
            kind, message = "invalid", "the token is not valid for this server"
        await self.limiter.refuse(context.peer(), authorization.partition(" ")[2], kind)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)


def _over_tls(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call came over a TLS connection."""
    return context.auth_context().get("transport_security_type") == [b"ssl"]


def parse_tokens(raw: str) -> list[str]:
    """Tokens from a comma- or newline-separated list (a secrets file holds one a line)."""
    return [t.strip() for t in raw.replace("\n", ",").split(",") if t.strip()]
