#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: create the slice (or reuse it), copy this working tree to
# every worker, install, mount a bucket as the shared workdir, and run one command on all workers.
#
#   launch/tpu_pod.sh -n NAME -z ZONE -t ACCELERATOR_TYPE -b BUCKET [-v RUNTIME] [-s] [-i] -- COMMAND...
#   launch/tpu_pod.sh -n mats -z us-east5-a -t v5p-32 -b my-bucket -- \
#       .venv/bin/python -m mats_jax.train --config=configs/mats_llama.py \
#       --workdir=/mnt/bucket/mats_llama --config.llm.checkpoint=/mnt/bucket/ckpt/vicuna \
#       --config.clap.checkpoint=/mnt/bucket/ckpt/clap --config.data.corpus=/mnt/bucket/corpus
#
# -v: TPU VM runtime (default tpu-ubuntu2204-base); -s: a spot (preemptible) slice; -i: skip the
# copy and install (the slice already runs this tree). The bucket (gs://BUCKET) is mounted with
# gcsfuse at /mnt/bucket on every worker, so all processes share one workdir (checkpoints,
# caches, metrics), which multi-host training needs. Each worker runs one process driving its
# chips; mats_jax.runtime.distributed finds the other workers through the TPU metadata. On preemption
# the processes agree on a step and save; running the same command again resumes.
# Needs an authenticated gcloud with a default project (or CLOUDSDK_CORE_PROJECT).
set -euo pipefail

usage() {
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2 # the header above
  exit 2
}

name="" zone="" type="" bucket="" runtime="tpu-ubuntu2204-base" spot=() install=1
while getopts "n:z:t:b:v:sih" option; do
  case "$option" in
    n) name=$OPTARG ;;
    z) zone=$OPTARG ;;
    t) type=$OPTARG ;;
    b) bucket=${OPTARG#gs://} ;;
    v) runtime=$OPTARG ;;
    s) spot=(--spot) ;;
    i) install=0 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -n "$name" ] && [ -n "$zone" ] && [ -n "$type" ] && [ -n "$bucket" ] && [ "$#" -gt 0 ] || usage

tpu=(gcloud compute tpus tpu-vm)
on_all_workers() {
  "${tpu[@]}" ssh "$name" --zone="$zone" --worker=all --command="$1"
}

if "${tpu[@]}" describe "$name" --zone="$zone" >/dev/null 2>&1; then
  echo "tpu_pod.sh: reusing $name" >&2
else
  echo "tpu_pod.sh: creating $name ($type, $runtime)" >&2
  "${tpu[@]}" create "$name" --zone="$zone" --accelerator-type="$type" --version="$runtime" "${spot[@]}"
fi

if ((install)); then
  repo=$(cd "$(dirname "$0")/.." && pwd)
  archive=$(mktemp --suffix=.tar.gz)
  trap 'rm -f "$archive"' EXIT
  # tracked and untracked (not ignored) files: what `git status` would commit, no .venv
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -czf "$archive" -T -)
  "${tpu[@]}" scp "$archive" "$name:mats_jax.tar.gz" --zone="$zone" --worker=all
  on_all_workers "set -euo pipefail
    rm -rf ~/mats_jax && mkdir ~/mats_jax && tar -xzf ~/mats_jax.tar.gz -C ~/mats_jax
    sudo apt-get -qq update
    sudo apt-get -qq install -y python3.11 python3.11-venv
    if ! command -v gcsfuse >/dev/null; then
      echo \"deb https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" |
        sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
        sudo gpg --dearmor --yes -o /etc/apt/trusted.gpg.d/gcsfuse.gpg
      sudo apt-get -qq update && sudo apt-get -qq install -y gcsfuse
    fi
    cd ~/mats_jax && bash setup.sh && .venv/bin/pip install --quiet 'jax[tpu]==0.10.2'"
fi

on_all_workers "set -euo pipefail
  if ! mountpoint -q /mnt/bucket; then
    sudo mkdir -p /mnt/bucket && sudo chown \"\$USER\" /mnt/bucket
    gcsfuse --implicit-dirs --rename-dir-limit=1000000 '$bucket' /mnt/bucket
  fi"

# the same command on every worker, at once; each process finds its place in the slice itself
on_all_workers "cd ~/mats_jax && $(printf '%q ' "$@")"
