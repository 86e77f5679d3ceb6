# syntax=docker/dockerfile:1
# Triton Inference Server with StyleProbe's model repository baked in.
#
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t styleprobe-triton .
#
# model_repository/ holds every bundled model set in Triton's layout with its production
# config.pbtxt (platform pytorch_libtorch, KIND_GPU instance groups, dynamic batching,
# warmup for every batch size; written by `styleprobe export` and `styleprobe triton
# configs`) and the `<set>-decode` ensembles. The `<set>.modelset.json` manifests at the top
# of the folder are plain files, which Triton ignores; the workers read them from their own
# image.
#
# Server options, and why:
# --model-control-mode=none   every model in /models is loaded at start and the set never
#                             changes while the server runs. The image is the unit of
#                             release: a new model set is a new image, rolled out replica by
#                             replica, so no two replicas can serve different models (poll
#                             mode could, while each notices a change at its own time), and
#                             nothing outside the pod may load or unload models (explicit
#                             mode would let any client on the network do so).
# --strict-readiness=true     /v2/health/ready answers 200 only once the server is live AND
#                             every model is loaded and warmed up, so the readiness probe,
#                             the compose health check and the orchestrator's health check
#                             send no traffic to a replica that would fail it.
# --exit-on-error=true        a model that fails to load stops the server (a crash the
#                             platform sees and restarts) instead of a server that runs with
#                             models missing.
# --disable-auto-complete-config  the committed config.pbtxt files are the whole truth.
# --exit-timeout-secs=30      on SIGTERM, requests in flight get 30 s to finish; keep the
#                             pod's terminationGracePeriodSeconds above it.
# Run it with a large /dev/shm (docker: --shm-size; Kubernetes: a memory emptyDir) and
# `--ulimit memlock=-1 --ulimit stack=67108864`, as NVIDIA recommends.

ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
COPY --chown=1000:1000 model_repository/ /models/
# The NGC image's unprivileged user (triton-server).
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=none", \
     "--strict-readiness=true", "--exit-on-error=true", "--disable-auto-complete-config", \
     "--allow-metrics=true", "--allow-gpu-metrics=true", "--exit-timeout-secs=30", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
