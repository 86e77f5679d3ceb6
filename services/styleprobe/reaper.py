"""Retention: stored images and results removed once older than the retention period, and
partial job folders removed, in rounds; the bucket's lifecycle rules as a backstop.

A round (:meth:`Reaper.run_once`) removes:

- *expired objects*: client uploads under ``inputs/`` older than ``retention_days``, and
  every job folder (``jobs/<id>/``, ``cohorts/<id>/``) whose newest object is older than
  that, whole, with the job's record in Redis once the job has ended (so a job is gone as
  a whole: GetJob answers NOT_FOUND, not a record whose files are missing). Probed
  directions (``directions/``) hold no patient data and are kept.
- *partial job folders*: a ``jobs/<id>/`` folder without ``manifest.json`` whose job (for
  a cohort's image, the cohort) has ended or has no record — left by a worker that died
  while cleaning up, an S3 outage during a failed job's clean-up, or a stage that was
  still writing when its job was deleted. Only folders untouched for the task time limit
  are taken, so no stage can still be writing them.

The orchestrator runs a round every ``reaper_interval_s`` seconds in a thread
(:func:`reap_periodically`): nothing else to deploy. With several orchestrator replicas,
a Redis key (``SET NX`` with the interval as expiry) lets one of them run each round. Its
rounds and the objects they remove are counted (``styleprobe_reaper_rounds_total``,
``styleprobe_reaper_objects_removed_total``; the alert ``StyleProbeRetentionFailing``
fires when no round has succeeded for 3 hours). The first round also sets the bucket's
lifecycle rules (:func:`set_lifecycle`: S3 only, best effort, logged), which expire the
same prefixes one day after the retention period: a backstop should no orchestrator run,
later than the reaper so that the reaper, which also removes the records, normally comes
first. The rounds are what the tests check: SeaweedFS
stores lifecycle rules, but its expiry is not something a test can wait for.

:func:`remove_job_objects` removes every object of one job (DeleteJob, clean-ups).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import urllib3
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from styleprobe.config import Settings
from styleprobe.jobs import JobNotFoundError, JobRecord, JobStore
from styleprobe.metrics import count_reaped, count_reaper_round
from styleprobe.storage import ArtifactStore
from styleprobe.storage.base import ObjectInfo

log = logging.getLogger(__name__)
DAY_S = 24 * 3600
INPUTS, JOBS, COHORTS = "inputs/", "jobs/", "cohorts/"
RETAINED = (INPUTS, JOBS, COHORTS)  # the prefixes the retention period applies to
MANIFEST = "manifest.json"  # a job folder's last object (explain.engine.write_manifest)
# A cohort image's job id: <cohort id>-<16 hex digits> (cohort.ledger.image_job_id).
IMAGE_JOB = re.compile(r"(?P<cohort>.+)-[0-9a-f]{16}")
ROUND_KEY = "styleprobe:reaper:round"  # held by the replica running this interval's round
RULE_ID_PREFIX = "styleprobe-"  # ids of the lifecycle rules set here; others are kept
LIFECYCLE_MARGIN_DAYS = 1  # the bucket's rules expire objects this long after the reaper


@dataclass
class ReapReport:
    """What a round removed: objects past the retention period, objects of partial job
    folders, and job records removed with their objects."""

    expired: int = 0
    partial: int = 0
    records: int = 0


def remove_objects(store: ArtifactStore, keys: Iterable[str]) -> int:
    """Delete ``keys`` (one already gone is no error, S3 takes 1000 a request); how many
    were asked for."""
    keys = list(keys)
    store.delete_many(keys)
    return len(keys)


def job_object_keys(store: ArtifactStore, job_id: str) -> list[str]:
    """Every object of job ``job_id``: its folder ``jobs/<id>/``; for a cohort also
    ``cohorts/<id>/`` (its inline images, rows and summary) and its images' job folders
    ``jobs/<id>-<image hash>/``. Shared objects (directions, uploads) are not a job's."""
    images = [key for key in store.list(f"{JOBS}{job_id}-")
              if (match := IMAGE_JOB.fullmatch(_folder_id(key)))
              and match["cohort"] == job_id]
    return [*store.list(f"{JOBS}{job_id}/"), *store.list(f"{COHORTS}{job_id}/"), *images]


def remove_job_objects(store: ArtifactStore, job_id: str) -> int:
    """Remove every object of job ``job_id`` (:func:`job_object_keys`); how many."""
    return remove_objects(store, job_object_keys(store, job_id))


class Reaper:
    """Rounds of removal over ``store`` and the job records in ``jobs``: objects older than
    ``retention_days`` (0: none expire), and partial job folders untouched for ``grace_s``
    seconds."""

    def __init__(self, store: ArtifactStore, jobs: JobStore, retention_days: int,
                 grace_s: float) -> None:
        if retention_days < 0 or grace_s < 0:
            raise ValueError("the retention period (STYLEPROBE_RETENTION_DAYS; 0: keep until "
                             f"deleted) and the grace must be >= 0, got {retention_days} "
                             f"days, {grace_s} s")
        self.store, self.jobs = store, jobs
        self.retention_days, self.grace_s = retention_days, grace_s
        self.lifecycle_done = False

    @classmethod
    def from_settings(cls, settings: Settings, store: ArtifactStore,
                      jobs: JobStore) -> Reaper:
        """The reaper of ``settings``: their retention period; a partial folder waits the
        task time limit (no stage of its job can still be writing it)."""
        return cls(store, jobs, settings.retention_days, float(settings.task_time_limit_s))

    def run_once(self, now: float | None = None) -> ReapReport:
        """One round as of ``now`` (Unix seconds; default: the clock)."""
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * DAY_S if self.retention_days else None
        report = ReapReport()
        if cutoff is not None:
            report.expired += remove_objects(self.store, [
                info.key for info in self.store.list_info(INPUTS) if info.modified < cutoff])
        for prefix in (JOBS, COHORTS):
            for folder_id, infos in _folders(self.store.list_info(prefix)).items():
                newest = max(info.modified for info in infos)
                keys = [info.key for info in infos]
                if cutoff is not None and newest < cutoff:
                    report.expired += remove_objects(self.store, keys)
                    report.records += self._forget(folder_id)
                elif (prefix == JOBS and newest < now - self.grace_s
                      and f"{JOBS}{folder_id}/{MANIFEST}" not in keys
                      and self._abandoned(folder_id)):
                    report.partial += remove_objects(self.store, keys)
        count_reaped("expired", report.expired)
        count_reaped("partial", report.partial)
        if report.expired or report.partial or report.records:
            log.info("reaper removed", extra=asdict(report))
        return report

    def run_round(self, interval_s: float) -> ReapReport | None:
        """A round (the bucket's lifecycle rules set first, until done) unless another
        replica has run one within ``interval_s``; None then."""
        claimed = self.jobs.redis.set(ROUND_KEY, socket.gethostname(), nx=True,
                                      ex=max(1, round(interval_s)))
        if not claimed:
            return None
        if not self.lifecycle_done:
            self.lifecycle_done = set_lifecycle(self.store, self.retention_days)
        return self.run_once()

    def _record(self, job_id: str) -> JobRecord | None:
        try:
            return self.jobs.get(job_id)
        except JobNotFoundError:
            return None

    def _forget(self, job_id: str) -> int:
        """Remove the record of ``job_id`` if it has ended; 1 if it was removed."""
        record = self._record(job_id)
        if record is None or not record.ended:
            return 0
        self.jobs.delete(job_id)
        return 1

    def _abandoned(self, folder_id: str) -> bool:
        """Whether nothing will finish the job folder ``folder_id``: its job (a cohort
        image's: the cohort) has ended or has no record."""
        owner = self._record(folder_id)
        if owner is None and (match := IMAGE_JOB.fullmatch(folder_id)):
            owner = self._record(match["cohort"])
        return owner is None or owner.ended


def _folder_id(key: str) -> str:
    """The folder of ``key`` under ``jobs/`` or ``cohorts/``: the job (or cohort) id."""
    return key.split("/", 2)[1]


def _folders(infos: Iterable[ObjectInfo]) -> dict[str, list[ObjectInfo]]:
    folders: defaultdict[str, list[ObjectInfo]] = defaultdict(list)
    for info in infos:
        if info.key.count("/") >= 2:  # an object directly under the prefix has no folder
            folders[_folder_id(info.key)].append(info)
    return folders


def set_lifecycle(store: ArtifactStore, retention_days: int) -> bool:
    """Make the bucket expire :data:`RETAINED` objects :data:`LIFECYCLE_MARGIN_DAYS` after
    ``retention_days`` (rules ``styleprobe-inputs``, ...); with 0 remove those rules. The
    bucket's other rules are kept. False if S3 could not be reached (try again later);
    True when done, when the server refused (logged: the reaper alone enforces retention)
    and for a store without a bucket (a local folder)."""
    from styleprobe.storage.s3 import S3Store

    if not isinstance(store, S3Store):
        return True
    client, bucket = store.client, store.bucket
    ours = [Rule(ENABLED, rule_filter=Filter(prefix=prefix),
                 rule_id=RULE_ID_PREFIX + prefix.rstrip("/"),
                 expiration=Expiration(days=retention_days + LIFECYCLE_MARGIN_DAYS))
            for prefix in RETAINED] if retention_days else []
    try:
        current = client.get_bucket_lifecycle(bucket)
        others = [rule for rule in (current.rules if current else [])
                  if not (rule.rule_id or "").startswith(RULE_ID_PREFIX)]
        if others or ours:
            client.set_bucket_lifecycle(bucket, LifecycleConfig(others + ours))
        elif current is not None:
            client.delete_bucket_lifecycle(bucket)
    except S3Error as exc:
        log.warning("bucket lifecycle rules refused; the reaper alone enforces retention",
                    extra={"bucket": bucket, "error": exc.code})
        return True
    except (MinioException, urllib3.exceptions.HTTPError) as exc:
        log.warning("bucket lifecycle rules not set yet: S3 unreachable",
                    extra={"bucket": bucket, "error": str(exc)})
        return False
    log.info("bucket lifecycle rules set", extra={
        "bucket": bucket, "expire_after_days": retention_days + LIFECYCLE_MARGIN_DAYS
        if retention_days else 0})
    return True


async def reap_periodically(reaper: Reaper, interval_s: float) -> None:
    """A round every ``interval_s`` seconds, in a thread, until cancelled; a round that
    fails (S3 or Redis unreachable) is logged and the next one tries again."""
    while True:
        started = time.monotonic()
        try:
            if await asyncio.to_thread(reaper.run_round, interval_s) is not None:
                count_reaper_round("ok")
        except Exception as exc:  # an outage must not stop the rounds
            count_reaper_round("failed")
            log.warning("reaper round failed", extra={"error": str(exc)})
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
