"""All configuration in one place, read from ``STYLEPROBE_*`` environment variables.

The defaults run the embedded mode: TorchScript in process, a local artifact directory,
inline execution. Each service reads the same :class:`Settings`;
``scripts/settings_table.py`` writes the README's table of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from styleprobe.explain.spec import ProbeSettings

# The checkout the package runs from, if it does (services/styleprobe/ in it); a wheel's
# copies of the checkout's model folders (setup.py puts them there).
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = Path(__file__).resolve().parent / "bundled"


def shipped_folder(name: str) -> Path:
    """A folder that ships with StyleProbe (``model_repository``, ``evaluation-models``):
    the checkout's when running from one, else the installed wheel's bundled copy. (Its
    ``STYLEPROBE_*`` variable, when set, overrides it in :meth:`Settings.from_env`.)"""
    checkout = REPO_ROOT / name
    return checkout if checkout.is_dir() else BUNDLED / name


DEFAULT_MODEL_REPOSITORY = shipped_folder("model_repository")
T = TypeVar("T")


def setting(default: T, doc: str, secret: bool = False, shown: str | None = None) -> T:
    """A :class:`Settings` field: its default, a one-line description for the README's
    table, whether it is a secret (read from a file in deployments) and, for a default that
    depends on the machine, how the table shows it."""
    return field(default=default, metadata={"doc": doc, "secret": secret, "shown": shown})


@dataclass(frozen=True)
class Settings:
    """Process settings; each field is read from ``STYLEPROBE_<FIELD NAME IN CAPITALS>``,
    or from the file that ``STYLEPROBE_<NAME>_FILE`` names (for secrets)."""

    model_repository: str = setting(
        str(DEFAULT_MODEL_REPOSITORY), "where model sets and their manifests lie",
        shown="the bundled model_repository/")
    backend: str = setting("local", "model backend: `local` (TorchScript in process) or `triton`")
    local_device: str = setting("cpu", "torch device of the local backend (`cuda`, `cuda:1`)")
    triton_url: str = setting("127.0.0.1:8001", "Triton's gRPC address")
    triton_timeout_s: float = setting(30.0, "deadline of every Triton call, in seconds")
    triton_retry_s: float = setting(
        120.0, "seconds a Triton call is retried, with backoff, while Triton is UNAVAILABLE")
    triton_concurrency: int = setting(4, "chunks of one batch in flight at once")
    store: str = setting("local", "artifact store: `local` directory or `s3`")
    store_dir: str = setting("styleprobe-artifacts", "the local store's directory")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis for the queue and job records",
                             secret=True)
    max_batch: int = setting(64, "largest batch a model backend sends in one call")
    cohort_render: bool = setting(
        False, "draw every cohort image's pictures as it is explained (SubmitCohort's "
               "`render_images` unset, `cohort run` without --render-images); false: rows, "
               "manifests and the summary, an image's pictures drawn when first asked for")
    probe_samples: int = setting(ProbeSettings().samples,
                                 "latents sampled to probe a direction (unless a job says)")
    max_input_pixels: int = setting(
        50_000_000, "largest input image, in pixels of one frame: a larger one is refused "
        "from its header, before decoding")
    max_input_frames: int = setting(
        1000, "most frames of a multi-frame input (DICOM, TIFF), checked from its header")
    evaluation_dir: str = setting(
        str(shipped_folder("evaluation-models")),
        "oracles and shortcut classifiers `styleprobe evaluate` uses",
        shown="the bundled evaluation-models/")
    # S3 / MinIO artifact store (store = "s3")
    s3_endpoint: str = setting("127.0.0.1:9000", "S3 endpoint, host:port")
    s3_public_endpoint: str = setting(
        "", "host:port that presigned URLs name, if not `STYLEPROBE_S3_ENDPOINT`")
    s3_access_key: str = setting("", "S3 access key", secret=True)
    s3_secret_key: str = setting("", "S3 secret key", secret=True)
    s3_bucket: str = setting("styleprobe", "the bucket of every object (created if missing)")
    s3_region: str = setting("us-east-1", "S3 region")
    s3_secure: bool = setting(False, "talk to S3 over HTTPS")
    presign_expiry_s: int = setting(3600, "how long a presigned GET URL stays valid, in seconds")
    s3_retry_s: float = setting(
        120.0, "seconds a worker's S3 call is retried, with backoff, while S3 is unreachable "
        "(its job paused meanwhile)")
    # the gRPC orchestrator
    grpc_listen: str = setting("127.0.0.1:50051", "the orchestrator's gRPC address")
    grpc_max_message_bytes: int = setting(16 * 1024 * 1024,
                                          "largest gRPC request or response (16 MiB)")
    grpc_grace_s: float = setting(
        10.0, "seconds a stopping orchestrator lets calls in flight finish")
    api_tokens: str = setting("", "comma-separated bearer tokens the orchestrator accepts",
                              secret=True)
    health_interval_s: float = setting(2.0, "seconds between checks of Redis, S3 and Triton")
    metrics_port: int = setting(0, "Prometheus `/metrics` port of a service process; 0: none")
    worker_metrics_port: int = setting(
        0, "a Celery worker's `/metrics` port (all pool processes); 0: none")
    metrics_host: str = setting("0.0.0.0", "address the `/metrics` servers listen on")
    job_ttl_s: int = setting(7 * 24 * 3600, "seconds job records stay in Redis (7 days)")
    watch_outage_s: float = setting(
        30.0, "seconds an open `WatchJob` waits out a Redis outage")
    # TLS of the gRPC API, and refused calls (services/styleprobe/tls.py, README "Deploy")
    grpc_tls_cert: str = setting(
        "", "PEM certificate (chain) file the orchestrator serves TLS with; '': plaintext")
    grpc_tls_key: str = setting("", "PEM private key file of `STYLEPROBE_GRPC_TLS_CERT`")
    grpc_tls_client_ca: str = setting(
        "", "PEM CA bundle of client certificates: set, every client must present a "
        "certificate it signed (mTLS)")
    grpc_plaintext_tokens: bool = setting(
        False, "accept bearer tokens over plaintext gRPC on a non-loopback address (on a "
        "loopback `STYLEPROBE_GRPC_LISTEN` they always are)")
    grpc_health_listen: str = setting(
        "", "plaintext address of a second listener serving only grpc.health.v1, for "
        "probes of a TLS orchestrator (e.g. 127.0.0.1:50052); '': none")
    auth_refusals_per_s: float = setting(
        5.0, "refused calls per second a peer address, or a token, may make before its "
        "refusals are delayed")
    auth_refusal_burst: int = setting(20, "refused calls a peer or token may make at once")
    auth_refusal_delay_s: float = setting(
        1.0, "seconds a refusal over those limits is held before it is answered")
    auth_log_interval_s: float = setting(
        30.0, "seconds between log lines counting refused calls (never one line each)")
    # TLS to Redis (rediss://), S3 (STYLEPROBE_S3_SECURE) and Triton
    tls_ca_bundle: str = setting(
        "", "PEM CA bundle the certificates of Redis, S3 and Triton are verified against; "
        "'': the system's")
    triton_tls: bool = setting(False, "talk to Triton's gRPC port over TLS")
    # retention of stored images and results (services/styleprobe/reaper.py, README "Deploy")
    retention_days: int = setting(
        7, "days client uploads (`inputs/`) and job artifacts (`jobs/`, `cohorts/`) are kept, "
        "job records with them; 0: kept until deleted")
    reaper_interval_s: float = setting(
        3600.0, "seconds between the orchestrator's rounds of removing expired objects and "
        "partial job folders; 0: no rounds")
    # the Celery workers
    task_soft_time_limit_s: int = setting(600, "seconds after which a stage is told to stop")
    task_time_limit_s: int = setting(660, "seconds after which a stage is killed")
    visibility_timeout_s: int = setting(
        900, "seconds after which an unacknowledged task is redelivered")
    worker_heartbeat_s: float = setting(
        5.0, "seconds between a worker's liveness beats in Redis; the tasks of a worker silent "
        "for 4 beats are handed out again at once")
    # the DICOM gateway (styleprobe serve dicom-gateway; services/styleprobe/gateway/)
    gateway_ae_title: str = setting("STYLEPROBE", "the DICOM gateway's own AE title")
    gateway_listen: str = setting(
        "0.0.0.0:11112", "host:port the gateway's C-STORE SCP (DICOM) listens on")
    gateway_orchestrator: str = setting(
        "127.0.0.1:50051", "the orchestrator's gRPC address the gateway calls")
    gateway_token: str = setting("", "bearer token the gateway calls the orchestrator with",
                                 secret=True)
    gateway_tls_ca: str = setting(
        "", "PEM CA bundle the gateway checks the orchestrator's TLS certificate against; "
        "'': plaintext gRPC (unless `STYLEPROBE_GATEWAY_TLS`)")
    gateway_tls: bool = setting(False, "the gateway calls the orchestrator over TLS")
    gateway_routes: str = setting(
        "[]", "routing rules, a JSON list: each {calling_ae, modality, body_part, "
        "series_description (regular expression), model_set, target, lambdas}; the first "
        "whose given fields all match routes an image")
    gateway_destination: str = setting(
        "", "where results are sent by C-STORE, `AET@host:port`; '': not sent by DIMSE")
    gateway_stow_url: str = setting(
        "", "DICOMweb root results are stored to by STOW-RS (e.g. "
        "http://pacs:8042/dicom-web); '': not sent by DICOMweb")
    gateway_series_timeout_s: float = setting(
        10.0, "seconds without a new instance after which a series is processed")
    gateway_job_timeout_s: float = setting(
        900.0, "seconds the gateway waits for one image's explanation")
    gateway_dicom_tls_cert: str = setting(
        "", "PEM certificate the gateway's DICOM port serves TLS with (DICOM TLS); '': "
        "plain DICOM")
    gateway_dicom_tls_key: str = setting("", "PEM key of `STYLEPROBE_GATEWAY_DICOM_TLS_CERT`")
    gateway_dicom_tls_client_ca: str = setting(
        "", "PEM CA bundle: set, a sender to the gateway's TLS port must present a "
        "certificate it signed")
    gateway_destination_tls_ca: str = setting(
        "", "PEM CA bundle: set, results go to the destination over DICOM TLS, its "
        "certificate checked against it (the gateway's own certificate presented, if set)")
    gateway_dicomweb_listen: str = setting(
        "", "host:port of the gateway's STOW-RS endpoint (POST /studies, plain HTTP: put "
        "it behind a TLS proxy); '': none")
    gateway_dicomweb_token: str = setting(
        "", "bearer token a STOW-RS request to the gateway must carry", secret=True)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}  # each converted to its field's type by _convert
        for f in fields(cls):
            name = f"STYLEPROBE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None and env.get(f"{name}_FILE"):
                raw = _read_secret(env[f"{name}_FILE"], name)
            if raw is None:
                continue
            values[f.name] = _convert(raw, f.type, f.name)
        return cls(**values)


def _read_secret(path: str, name: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc


def _convert(raw: str, type_name: object, name: str) -> object:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ValueError(f"STYLEPROBE_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
