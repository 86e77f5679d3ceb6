#!/usr/bin/env bash
# Train the networks of both bundled model sets on one GPU node, the two sets at once, within
# a fixed time, in one call: first the training benchmark (benchmarks/results/training-cuda.md,
# BENCH=0 to skip), then per set the classifier, the GAN for GAN_MINUTES with the new recipe
# (batch GAN_BATCH_<SET>, lr and R1 scaled with it, bf16 autocast, channels-last, ADA on below
# 50 000 images; COMPILE=reduce-overhead to use CUDA graphs where the benchmark shows they pay;
# NPROC=K for K GPUs through torchrun and DistributedDataParallel), then each encoder variant
# for ENCODER_MINUTES. Checkpoints land in runs/<set>/ where scripts/build_model_sets.sh
# finds them and exports them (EXPORT_ONLY=1; on any machine, CPU included).
#
#   scripts/train_on_gpu.sh [knee|histology|all]   (DEVICE=cpu with small N_* and minutes: a dry run)
#   ENCODERS_ONLY=1 scripts/train_on_gpu.sh   (encoders for the GANs already in runs/)
#
# Runs on a bare GPU machine with PyTorch: the package is used from services/, not
# installed. Each step logs to runs/<set>/<step>.log (gan, classifier, encoder...).
# A run interrupted (or out of time) resumes from its checkpoint when called again.
# The recipe of the bundled sets (before issue 19): GAN_BATCH_KNEE=64 GAN_BATCH_HISTOLOGY=128
# HISTOLOGY_RES=32 GAN_FLAGS="--ada off --lr 0.0025 --precision fp32" (its EMA half-life was
# 10k images; now it grows with the batch: 20k at 64).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=services TQDM_MININTERVAL=15
SP="python3 -m styleprobe.cli --log-level INFO"
DEVICE="${DEVICE:-cuda}"
GAN_MINUTES="${GAN_MINUTES:-4.5}"
COMPILE="${COMPILE:-}"
NPROC="${NPROC:-1}"
HISTOLOGY_RES="${HISTOLOGY_RES:-64}"
ENCODER_MINUTES="${ENCODER_MINUTES:-1.5}"
CLASSIFIER_N="${CLASSIFIER_N:-10000}"
BANK="${BANK:-40960}"

# name data resolution n_gan gan_batch encoder-variants ("folder pixel lowpass prior statistics")...
train_set() {
  local name=$1 data=$2 res=$3 n=$4 batch=$5 run="runs/$1"
  shift 5
  mkdir -p "$run"
  if [[ -z "${ENCODERS_ONLY:-}" ]]; then
    $SP train classifier --data "$data" --n "$CLASSIFIER_N" --resolution "$res" --epochs 5 \
        --device "$DEVICE" --out "$run/classifier" > "$run/classifier.log" 2>&1 &
    local launch=$SP
    if [[ "$NPROC" -gt 1 ]]; then
      launch="python3 -m torch.distributed.run --standalone --nproc-per-node $NPROC -m styleprobe.cli -- --log-level INFO"
    fi
    $launch train gan --data "$data" --n "$n" --resolution "$res" --w-dim 128 --channel-base 1024 \
        --channel-max 128 --batch "$batch" --iterations 1000000 --minutes "$GAN_MINUTES" \
        --ada auto --precision auto --compile "$COMPILE" ${GAN_FLAGS:-} \
        --device "$DEVICE" --out "$run/gan" > "$run/gan.log" 2>&1
  fi
  local variant folder pixel lowpass prior statistics
  for variant in "$@"; do
    read -r folder pixel lowpass prior statistics <<< "$variant"
    $SP train encoder --data "$data" --n "$n" --gan "$run/gan/checkpoint.pt" \
        --iterations 1000000 --minutes "$ENCODER_MINUTES" --bank-size "$BANK" \
        --pixel-weight "$pixel" --lowpass-weight "$lowpass" --prior-weight "$prior" \
        --statistics-weight "$statistics" \
        --device "$DEVICE" --restart --out "$run/$folder" > "$run/$folder.log" 2>&1 &
  done
  wait
}

WHICH="${1:-all}"
if [[ "${BENCH:-1}" == 1 && "$DEVICE" == cuda ]]; then
  mkdir -p runs
  timeout 240 python3 benchmarks/bench_training.py --device cuda --steps 32 --threads 4 \
      > runs/bench_training.log 2>&1 || echo "benchmark failed or timed out: runs/bench_training.log"
fi
if [[ "$WHICH" == knee || "$WHICH" == all ]]; then
  train_set knee-oa knee 64 "${KNEE_N:-20000}" "${GAN_BATCH_KNEE:-512}" "encoder 1 2 1 0" &
fi
if [[ "$WHICH" == histology || "$WHICH" == all ]]; then
  # the bundled encoder first (generated pairs, texture statistics of real patches, latent
  # prior); the others are the comparison in its model card's record
  train_set histology-tumour histology "$HISTOLOGY_RES" "${HISTOLOGY_N:-12000}" "${GAN_BATCH_HISTOLOGY:-512}" \
      "encoder 0 0 1 10" "encoder-generated 0 0 0 0" "encoder-statistics 0 0 0 10" &
fi
wait
