#!/usr/bin/env bash
# Train the networks of both bundled model sets on one GPU, the two sets at once, within
# a fixed time: classifier, then the GAN for GAN_MINUTES, then each encoder variant for
# ENCODER_MINUTES. Checkpoints land in runs/<set>/ where scripts/build_model_sets.sh
# finds them, resumes nothing more and exports (on any machine, CPU included).
#
#   scripts/train_on_gpu.sh           (DEVICE=cpu with small N_* and minutes: a dry run)
#
# Runs on a bare GPU machine with PyTorch: the package is used from services/, not
# installed. Each set's output is in runs/<set>/log.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=services TQDM_MININTERVAL=15
SP="python3 -m styleprobe.cli --log-level INFO"
DEVICE="${DEVICE:-cuda}"
GAN_MINUTES="${GAN_MINUTES:-4.5}"
ENCODER_MINUTES="${ENCODER_MINUTES:-1.5}"
CLASSIFIER_N="${CLASSIFIER_N:-10000}"
BANK="${BANK:-40960}"

train_set() {  # name data resolution n_gan encoder_variants... ("folder pixel_weight lowpass_weight")
  local name=$1 data=$2 res=$3 n=$4 run="runs/$1"
  shift 4
  mkdir -p "$run"
  $SP train classifier --data "$data" --n "$CLASSIFIER_N" --resolution "$res" --epochs 5 \
      --device "$DEVICE" --out "$run/classifier" > "$run/classifier.log" 2>&1 &
  $SP train gan --data "$data" --n "$n" --resolution "$res" --w-dim 128 --channel-base 1024 \
      --channel-max 128 --batch 64 --iterations 1000000 --minutes "$GAN_MINUTES" \
      --device "$DEVICE" --out "$run/gan" > "$run/gan.log" 2>&1
  local variant folder pixel lowpass
  for variant in "$@"; do
    read -r folder pixel lowpass <<< "$variant"
    $SP train encoder --data "$data" --n "$n" --gan "$run/gan/checkpoint.pt" \
        --iterations 1000000 --minutes "$ENCODER_MINUTES" --bank-size "$BANK" \
        --pixel-weight "$pixel" --lowpass-weight "$lowpass" --device "$DEVICE" \
        --out "$run/$folder" > "$run/$folder.log" 2>&1 &
  done
  wait
}

train_set knee-oa knee 64 "${KNEE_N:-20000}" "encoder 1 2" &
train_set histology-tumour histology 32 "${HISTOLOGY_N:-12000}" \
    "encoder 0 0" "encoder-lowpass 0 2" "encoder-pixel 0.5 1" &
wait
