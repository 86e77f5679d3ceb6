"""The artifact store over S3 (MinIO in production, SeaweedFS in the tests): the ``minio`` SDK.

One bucket holds everything that must last; it is created when the store opens if it is
missing. Key scheme:

- ``inputs/<name>`` — images a client uploads for jobs that name them by key;
- ``jobs/<job id>/...`` — one job's artifacts (records, arrays, frames, animation, strip,
  report); its ``manifest.json`` is written last;
- ``directions/<sha256>.json`` — probed directions, shared by every job with the same
  models, target and probe parameters.

Every object carries its content type. An S3 PUT is atomic (a reader sees the whole object
or none), and a job's manifest is its last object, so a manifest that exists means a
complete job. :meth:`S3Store.presigned_url` signs a GET URL valid for the configured
expiry; with ``public_endpoint`` set, URLs name the host clients reach rather than the one
this process uses.

A worker's store waits out an outage (:meth:`S3Store.wait_out_outages`): a call that finds
the server unreachable (connection refused or reset, a timeout, a 5xx answer) is retried
with backoff for up to ``STYLEPROBE_S3_RETRY_S`` (120 s), telling its
:class:`~styleprobe.outages.OutageListener` when it starts waiting and when S3 answers
again (the job is paused meanwhile). The orchestrator's store does not wait: its health
check and calls see an outage at once (new jobs are refused, reads get UNAVAILABLE).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error, ServerError

from styleprobe.config import Settings
from styleprobe.outages import OutageListener
from styleprobe.storage.base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    StoreError,
    validate_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NotFound")
# Answers of a server that is starting or overloaded: waited out like a refused connection.
UNAVAILABLE_CODES = ("ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout")
TIMEOUT_S = 10.0  # connect and read timeout of every request
RETRIES = 3  # urllib3 retries of a failed connection
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 5.0  # waits between two tries while S3 is down


def unreachable(exc: Exception) -> bool:
    """Whether ``exc`` says the server could not be reached or could not answer now (worth
    waiting for), rather than an answer about the request (a missing key, refused
    credentials)."""
    if isinstance(exc, S3Error):
        return exc.code in UNAVAILABLE_CODES
    return isinstance(exc, (urllib3.exceptions.HTTPError, ServerError))


class S3Store:
    """An :class:`~styleprobe.storage.base.ArtifactStore` in one S3 bucket."""

    dependency = "s3"

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = False, region: str = "us-east-1",
                 presign_expiry_s: int = 3600, public_endpoint: str = "",
                 check: bool = True, ca_bundle: str = "") -> None:
        if not access_key or not secret_key:
            raise StoreError("the S3 store needs an access key and a secret key "
                             "(STYLEPROBE_S3_ACCESS_KEY, STYLEPROBE_S3_SECRET_KEY or their "
                             "_FILE variants)")
        if not 1 <= presign_expiry_s <= 7 * 24 * 3600:
            raise StoreError(f"presign expiry must lie in 1 s .. 7 days, got {presign_expiry_s}")
        self.bucket = bucket
        self.endpoint = endpoint
        self.presign_expiry = timedelta(seconds=presign_expiry_s)
        # HTTPS verifies the server's certificate: against ca_bundle (a PEM file) if given,
        # else the system's roots
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=TIMEOUT_S, read=TIMEOUT_S), maxsize=16,
            retries=urllib3.Retry(total=RETRIES, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
            cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle or None)
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                            secure=secure, region=region, http_client=http)
        # Signing is local: a client for the public host only computes URLs.
        self._signer = (Minio(public_endpoint, access_key=access_key, secret_key=secret_key,
                              secure=secure, region=region)
                        if public_endpoint else self.client)
        self.retry_s = 0.0
        self.listener: OutageListener | None = None
        if check:
            self.ensure_bucket()

    def wait_out_outages(self, retry_s: float, listener: OutageListener | None = None
                         ) -> S3Store:
        """From now on, retry a call that finds S3 unreachable for up to ``retry_s``
        seconds, telling ``listener``; this store."""
        if retry_s < 0:
            raise StoreError(f"the S3 retry budget must be >= 0 s, got {retry_s}")
        self.retry_s, self.listener = retry_s, listener
        return self

    @classmethod
    def from_settings(cls, settings: Settings, check: bool = True) -> S3Store:
        """The store of ``settings``; ``check`` False: the server is not contacted now
        (a caller that checks it later with :meth:`ensure_bucket`)."""
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   settings.s3_bucket, secure=settings.s3_secure, region=settings.s3_region,
                   presign_expiry_s=settings.presign_expiry_s,
                   public_endpoint=settings.s3_public_endpoint, check=check,
                   ca_bundle=settings.tls_ca_bundle)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (several processes may race to); a
        :class:`StoreError` if the server cannot be reached or refuses the credentials."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                log.info("bucket created", extra={"bucket": self.bucket})
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error("create bucket", self.bucket, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, ValueError) as exc:
            raise self._error("create bucket", self.bucket, exc) from exc

    def check(self) -> None:
        """The server answers and the bucket exists (it is created if missing)."""
        self.ensure_bucket()

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        validate_key(key)
        data = bytes(data)
        self._call("put", key, lambda: self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type))

    def get(self, key: str) -> bytes:
        validate_key(key)

        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("get", key, read)

    def exists(self, key: str) -> bool:
        try:
            self.content_type(key)
        except ObjectNotFound:
            return False
        return True

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        return self._call("list", prefix, lambda: sorted(
            (ObjectInfo(o.object_name, o.size or 0,
                        o.last_modified.timestamp() if o.last_modified else 0.0)
             for o in self.client.list_objects(self.bucket, prefix=prefix or None,
                                               recursive=True)
             if o.object_name and not o.is_dir), key=lambda info: info.key))

    def list(self, prefix: str = "") -> list[str]:
        return self._call("list", prefix, lambda: sorted(
            o.object_name for o in self.client.list_objects(
                self.bucket, prefix=prefix or None, recursive=True)
            if o.object_name and not o.is_dir))

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        found = self._call("stat", key, lambda: self.client.stat_object(self.bucket, key))
        modified = found.last_modified.timestamp() if found.last_modified else 0.0
        return ObjectInfo(key, found.size or 0, modified)

    def read_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        validate_key(key)
        response = self._call("get", key, lambda: self.client.get_object(self.bucket, key))
        try:
            yield from response.stream(chunk_bytes)
        except urllib3.exceptions.HTTPError as exc:
            raise self._error("get", key, exc) from exc
        finally:
            response.close()
            response.release_conn()

    def content_type(self, key: str) -> str:
        validate_key(key)
        return self._call("stat", key, lambda: self.client.stat_object(
            self.bucket, key).content_type or DEFAULT_CONTENT_TYPE)

    def delete(self, key: str) -> None:
        self.content_type(key)  # ObjectNotFound if absent, like the local store
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` with DeleteObjects, 1000 a request; a missing key is no error."""
        for key in keys:
            validate_key(key)
        if not keys:
            return
        errors = self._call("delete", keys[0], lambda: list(self.client.remove_objects(
            self.bucket, [DeleteObject(key) for key in keys])))
        if errors:
            raise StoreError(f"S3 delete of {len(errors)} of {len(keys)} objects in bucket "
                             f"{self.bucket!r} on {self.endpoint} failed, e.g. "
                             f"{errors[0].name!r}: {errors[0].code}: {errors[0].message}")

    def presigned_url(self, key: str) -> str:
        """A GET URL of ``key`` that works without credentials until the expiry."""
        validate_key(key)
        try:
            return self._signer.presigned_get_object(self.bucket, key,
                                                     expires=self.presign_expiry)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("presign", key, exc) from exc

    def _call(self, action: str, key: str, call: Callable[[], T]) -> T:
        """``call()``; while S3 is unreachable, retried with backoff for up to ``retry_s``
        (the listener told when the wait starts and ends); errors as :class:`StoreError`."""
        started, delay, waited = time.monotonic(), FIRST_BACKOFF_S, False
        while True:
            try:
                result = call()
            except (MinioException, urllib3.exceptions.HTTPError) as exc:
                left = started + self.retry_s - time.monotonic()
                if not unreachable(exc):  # S3 answered (a refusal is an answer)
                    self._back(action, waited, started)
                    raise self._error(action, key, exc) from exc
                if left <= 0:
                    raise self._error(action, key, exc) from exc
                if not waited:
                    log.warning("s3 unreachable; waiting", extra={
                        "action": action, "budget_s": self.retry_s, "error": type(exc).__name__})
                    if self.listener is not None:
                        self.listener.waiting(self.dependency, self.retry_s)
                    waited = True
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            self._back(action, waited, started)
            return result

    def _back(self, action: str, waited: bool, started: float) -> None:
        """After a call that waited got an answer: tell the listener S3 is back."""
        if waited:
            log.info("s3 reachable again", extra={
                "action": action, "waited_s": round(time.monotonic() - started, 1)})
            if self.listener is not None:
                self.listener.back(self.dependency)

    def _error(self, action: str, key: str, exc: Exception) -> StoreError:
        if isinstance(exc, S3Error) and exc.code in MISSING_CODES:
            return ObjectNotFound(key)
        if isinstance(exc, S3Error):
            return StoreError(f"S3 {action} {key!r} in bucket {self.bucket!r} on "
                              f"{self.endpoint}: {exc.code}: {exc.message}")
        return StoreError(f"S3 {action} {key!r} on {self.endpoint} failed: {exc}")
