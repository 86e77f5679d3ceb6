"""The gRPC orchestrator: the public API of protos/styleprobe/v1 over ``grpc.aio``.

:mod:`~.requests` checks a request completely before anything is stored or queued;
:mod:`~.service` implements the RPCs over the job store (Redis), the artifact store and
the Celery chain; :mod:`~.messages` turns records into API messages; :mod:`~.interceptors`
holds authentication, request ids and metrics; :mod:`~.health` the background checker of
Redis, S3 and Triton; :mod:`~.server` puts them together and stops gracefully.
"""
