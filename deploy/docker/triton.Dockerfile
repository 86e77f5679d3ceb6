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
# The folder is also where model sets are added while the service runs: compose
# bind-mounts the host's model_repository/ over /models, the Helm chart a shared volume
# (README "Adding a model set to a running service").
#
# Server options, and why:
# --model-control-mode=explicit --load-model=*
#                             every model in /models is loaded at start; later, a model is
#                             loaded only when the orchestrator asks through the repository
#                             API (it loads the sets added to the repository, and never
#                             reloads a model that is ready, so shared models keep serving).
#                             Keep port 8001 off the network outside the service: any client
#                             that reaches it may load or unload models.
# --strict-readiness=false    /v2/health/ready answers 200 once the server is live, and the
#                             endpoints start only after the models loaded at start are
#                             ready and warmed up (a failure exits: --exit-on-error). Strict
#                             readiness would make the server unready during every later
#                             load, and for good after a load that fails (measured with
#                             Triton 2.51), taking the replica out of service for every set.
# --exit-on-error=true        a model that fails to load at start stops the server (a crash the
#                             platform sees and restarts) instead of a server that runs with
#                             models missing.
# --disable-auto-complete-config  the committed config.pbtxt files are the whole truth.
# --exit-timeout-secs=30      on SIGTERM, requests in flight get 30 s to finish; keep the
#                             pod's terminationGracePeriodSeconds above it.
# Run it with a large /dev/shm (docker: --shm-size; Kubernetes: a memory emptyDir) and
# `--ulimit memlock=-1 --ulimit stack=67108864`, as NVIDIA recommends.

# The image and the exported models (deploy/docker/triton-pairing.json, checked against
# pyproject's torch pin by tests/unit/test_triton_pairing.py): 24.10's pytorch_libtorch
# backend is libtorch 2.5 (NGC PyTorch 24.10), the models are exported by torch 2.13.
# torch 2.5.1 loads every exported model and computes the same outputs (max abs difference
# 4.8e-07; scripts/check_libtorch.py, rerun it when the pin or the image moves); the
# image itself has not served them yet: verify it on a GPU host (the built image serving
# benchmarks/bench_triton.py) before production. Driver: 24.10 is CUDA 12.6.2, NVIDIA
# driver 560 or later (data center GPUs: also R470 470.57+, R525 525.85+, R535 535.86+,
# R545 545.23+).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
COPY --chown=1000:1000 model_repository/ /models/
# The NGC image's unprivileged user (triton-server).
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
     "--load-model=*", "--strict-readiness=false", "--exit-on-error=true", \
     "--disable-auto-complete-config", "--allow-metrics=true", "--allow-gpu-metrics=true", "--exit-timeout-secs=30", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
