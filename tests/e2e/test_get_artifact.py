"""GetArtifact end to end: every artifact of an explanation and of a cohort streamed through
the API equals the stored object, chunked, with its size and content type first; and
``styleprobe client fetch`` (real Redis, S3, Triton, orchestrator and workers: see
conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from service_calls import auth, finished, knee_pngs
from styleprobe.api import pb, rpc
from styleprobe.storage import ArtifactStore, open_store
from styleprobe.storage.base import CHUNK_BYTES
from styleprobe.testing.process import venv_program
from styleprobe.testing.stack import ServiceStack

TINY = "tiny"
LAMBDAS = "-2:2:5"
PROBE = pb.ProbeOptions(samples=400, seed=41)
# Every kind of output an explanation renders (frames and differences numbered), and the
# manifest; "flip_frame" as well when the search found a flip.
EXPLANATION_KINDS = {"input", "reconstruction", "animation", "strip", "plot", "differences",
                     "report", "manifest", "frame", "difference"}
COHORT_KINDS = {"csv", "parquet", "report"}





def fetch(stub: rpc.StyleProbeStub, token: str, job_id: str, name: str
          ) -> list[pb.ArtifactChunk]:
    return list(stub.GetArtifact(pb.GetArtifactRequest(job_id=job_id, name=name),
                                 metadata=auth(token), timeout=60))


def check_streamed(chunks: list[pb.ArtifactChunk], store: ArtifactStore, key: str) -> None:
    """The chunks are the stored object: size and content type first, then 1 MiB pieces."""
    stored = store.get(key)
    assert b"".join(c.data for c in chunks) == stored, key
    assert chunks[0].size == len(stored) and chunks[0].content_type == store.content_type(key)
    assert all(not c.size and not c.content_type for c in chunks[1:])
    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)
    assert len(chunks) == max(1, -(-len(stored) // CHUNK_BYTES))


def kind(name: str) -> str:
    """"frame_003" -> "frame"; other names are their kind."""
    head, _, number = name.rpartition("_")
    return head if number.isdigit() else name


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.StyleProbeStub:
    return rpc.StyleProbeStub(channel)


@pytest.fixture(scope="module")
def explanation(stack: ServiceStack, stub: rpc.StyleProbeStub) -> pb.Job:
    """A succeeded explain job of a knee phantom."""
    job = stub.Explain(pb.ExplainRequest(
        image_bytes=knee_pngs(1, seed=5)[0], filename="knee.png", model_set=TINY,
        lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE)),
        metadata=auth(stack.token), timeout=30)
    return finished(stub, stack.token, job)


def test_every_artifact_of_an_explanation_streams_as_stored(
        stack: ServiceStack, stub: rpc.StyleProbeStub, explanation: pb.Job) -> None:
    store = open_store(stack.settings())
    artifacts = explanation.explanation.artifacts
    kinds = {kind(a.name) for a in artifacts}
    expected = EXPLANATION_KINDS | ({"flip_frame"} if explanation.explanation.flip.found
                                    else set())
    assert kinds == expected
    for artifact in artifacts:
        check_streamed(fetch(stub, stack.token, explanation.job_id, artifact.name), store,
                       artifact.key)
    # by its file in the job's folder, too
    strip = {a.name: a.key for a in artifacts}["strip"]
    assert fetch(stub, stack.token, explanation.job_id, "strip.png")[0].data == store.get(strip)


def test_every_artifact_of_an_attributes_job_streams_as_stored(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    job = stub.FindAttributes(pb.FindAttributesRequest(
        explain=pb.ExplainRequest(image_bytes=knee_pngs(1, seed=8)[0], filename="knee.png",
                                  model_set=TINY, lambdas=LAMBDAS,
                                  options=pb.ExplainOptions(probe=PROBE)),
        attributes=pb.AttributeOptions(top=2, samples=2, shift=2.0, seed=4)),
        metadata=auth(stack.token), timeout=30)
    final = finished(stub, stack.token, job)
    store = open_store(stack.settings())
    artifacts = final.explanation.artifacts
    strips = {a.strip_artifact for a in final.explanation.attributes}
    assert len(strips) == 2 and strips <= {a.name for a in artifacts}
    expected = EXPLANATION_KINDS | {"attribute"} | ({"flip_frame"}
                                                    if final.explanation.flip.found else set())
    assert {kind(a.name) for a in artifacts} == expected
    for artifact in artifacts:
        check_streamed(fetch(stub, stack.token, final.job_id, artifact.name), store,
                       artifact.key)


def test_every_artifact_of_a_cohort_streams_as_stored(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    images = pb.InlineImages(images=[pb.InlineImage(data=data, filename=f"knee-{i}.png")
                                     for i, data in enumerate(knee_pngs(3, seed=9))])
    job = stub.SubmitCohort(pb.SubmitCohortRequest(
        inline=images, model_set=TINY, lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE),
        render_images=True), metadata=auth(stack.token), timeout=30)
    final = finished(stub, stack.token, job)
    store = open_store(stack.settings())
    assert {a.name for a in final.cohort.artifacts} == COHORT_KINDS
    for artifact in final.cohort.artifacts:
        check_streamed(fetch(stub, stack.token, final.job_id, artifact.name), store,
                       artifact.key)
    # each image is a job of its own (the summary's job_id column): every artifact of one
    summary = b"".join(c.data for c in fetch(stub, stack.token, final.job_id, "csv"))
    rows = list(csv.DictReader(io.StringIO(summary.decode())))
    assert len(rows) == 3 and all(row["status"] == "done" for row in rows)
    image = rows[0]["job_id"]
    manifest = json.loads(b"".join(c.data for c in fetch(stub, stack.token, image,
                                                          "manifest")))
    outputs = manifest["outputs"]
    assert {kind(name) for name in outputs} >= EXPLANATION_KINDS
    for name, key in outputs.items():
        check_streamed(fetch(stub, stack.token, image, name), store, key)
    unknown = f"{final.job_id}-{'0' * 16}"  # of this cohort, but no such image
    with pytest.raises(grpc.RpcError) as caught:
        fetch(stub, stack.token, unknown, "strip")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_large_artifact_comes_in_one_mebibyte_chunks(
        stack: ServiceStack, stub: rpc.StyleProbeStub, explanation: pb.Job) -> None:
    store = open_store(stack.settings())
    report = {a.name: a.key for a in explanation.explanation.artifacts}["report"]
    big = os.urandom(2 * CHUNK_BYTES + 12345)  # as a report with many frames may be
    store.put(report, big, "text/html")
    chunks = fetch(stub, stack.token, explanation.job_id, "report")
    assert [len(c.data) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 12345]
    check_streamed(chunks, store, report)


def test_unknown_names_jobs_and_callers_are_refused(
        stack: ServiceStack, stub: rpc.StyleProbeStub, explanation: pb.Job) -> None:
    cases = [(explanation.job_id, "nope", auth(stack.token), grpc.StatusCode.NOT_FOUND),
             (explanation.job_id, "input.json", auth(stack.token), grpc.StatusCode.NOT_FOUND),
             ("0" * 32, "strip", auth(stack.token), grpc.StatusCode.NOT_FOUND),
             (explanation.job_id, "", auth(stack.token), grpc.StatusCode.INVALID_ARGUMENT),
             (explanation.job_id, "strip", auth("wrong"), grpc.StatusCode.UNAUTHENTICATED)]
    for job_id, name, metadata, code in cases:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.GetArtifact(pb.GetArtifactRequest(job_id=job_id, name=name),
                                  metadata=metadata, timeout=30))
        assert caught.value.code() == code, (job_id, name)


def test_cli_fetch_saves_an_artifact(stack: ServiceStack, explanation: pb.Job,
                                     tmp_path: Path) -> None:
    base = [venv_program("styleprobe"), "client", "fetch", "--server", stack.grpc_address,
            "--token", stack.token, explanation.job_id]
    out = tmp_path / "strip.png"
    done = subprocess.run([*base, "strip", "-o", str(out)], capture_output=True, text=True,
                          timeout=120, check=True)
    key = {a.name: a.key for a in explanation.explanation.artifacts}["strip"]
    assert out.read_bytes() == open_store(stack.settings()).get(key)
    assert f"saved {out}" in done.stdout and "image/png" in done.stdout
    missing = tmp_path / "nope.bin"
    refused = subprocess.run([*base, "nope", "-o", str(missing)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "NOT_FOUND" in refused.stderr
    assert not missing.exists() and not list(tmp_path.glob(".*.part"))


def test_a_cohort_without_pictures_draws_an_images_pictures_when_asked(
        stack: ServiceStack, stub: rpc.StyleProbeStub, tmp_path: Path) -> None:
    paths = []
    for i, data in enumerate(knee_pngs(2, seed=13)):
        paths.append(tmp_path / f"knee-{i}.png")
        paths[-1].write_bytes(data)
    submitted = subprocess.run(
        [venv_program("styleprobe"), "cohort", "submit", *map(str, paths), "--model-set", TINY,
         "--lambdas", LAMBDAS, "--probe-samples", str(PROBE.samples), "--probe-seed",
         str(PROBE.seed), "--no-render-images", "--watch", "--server", stack.grpc_address,
         "--token", stack.token], capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stderr
    cohort_id = submitted.stdout.splitlines()[0]
    summary = b"".join(c.data for c in fetch(stub, stack.token, cohort_id, "csv"))
    image = next(csv.DictReader(io.StringIO(summary.decode())))["job_id"]
    bare = json.loads(b"".join(c.data for c in fetch(stub, stack.token, image, "manifest")))
    assert set(bare["outputs"]) == {"manifest"}  # rows and manifests only

    strip = b"".join(c.data for c in fetch(stub, stack.token, image, "strip"))
    assert strip.startswith(b"\x89PNG")
    drawn = json.loads(b"".join(c.data for c in fetch(stub, stack.token, image, "manifest")))
    assert {kind(name) for name in drawn["outputs"]} >= EXPLANATION_KINDS
    assert drawn["probabilities"] == bare["probabilities"]
    store = open_store(stack.settings())
    assert store.get(drawn["outputs"]["strip"]) == strip
