#!/usr/bin/env bash
# Start a purl-jax search on every host of an existing Cloud TPU VM slice.
#
#   scripts/tpu_vm_search.sh TPU_NAME ZONE WORKDIR [purl-jax prune flags ...]
#
# Example (ResNet-50 / ImageNet PuRL on a v4-32 slice, ImageNet prepared in a bucket):
#
#   gcloud compute tpus tpu-vm create purl --zone us-central2-b \
#       --accelerator-type v4-32 --version tpu-ubuntu2204-base      # you create the slice
#   scripts/tpu_vm_search.sh purl us-central2-b gs://MY_BUCKET/runs/resnet50_purl \
#       --config.data_dir=gs://MY_BUCKET/tfds
#
# This script creates no cloud resources. It runs two commands on all hosts at once with
#
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command "..."
#
#   1. install: clone purl-jax (REPO, REF) and `pip install -e ".[gcs]" "jax[tpu]"` (SKIP_INSTALL=1 skips it);
#   2. search:  purl-jax prune --distributed --config CONFIG --workdir WORKDIR [flags]
#
# Every host runs the *same* command. `--distributed` calls jax.distributed.initialize() (on TPU VMs
# the coordinator, process count and id are detected), so the evaluator shards its candidates, and
# training and fine-tuning their batches, over all chips of the slice; only process 0 prints and
# writes the JSON, logs and plots. WORKDIR must be one place every host sees: a gs:// bucket path
# (written through etils.epath and gcsfs), a Filestore / NFS mount, or a bucket mounted with
# gcsfuse on every host (MOUNT_BUCKET=name mounts it at /mnt/shared here). Checkpoints (orbax,
# saved by all hosts together) go there, so after a preemption or a crash, running the same
# command again resumes from them on any host.
#
# Environment knobs:
#   CONFIG        config file relative to the checkout (default configs/resnet50_imagenet_purl.py)
#   REPO, REF     where to get purl-jax (default https://github.com/purl-jax/purl-jax, main)
#   SKIP_INSTALL  1: purl-jax is installed on the hosts already
#   MOUNT_BUCKET  a GCS bucket to mount with gcsfuse at /mnt/shared on every host
#   DRY_RUN       1: print the gcloud commands instead of running them
#   LOG           log file on each host (default ~/purl_jax_prune.log); the search runs under nohup
#                 so it survives the ssh session; follow it with
#                 gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 --command "tail -f LOG"

set -euo pipefail

if [[ $# -lt 3 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

NAME=$1 ZONE=$2 WORKDIR=$3
shift 3
CONFIG=${CONFIG:-configs/resnet50_imagenet_purl.py}
REPO=${REPO:-https://github.com/purl-jax/purl-jax}
REF=${REF:-main}
LOG=${LOG:-'~/purl_jax_prune.log'}

on_all_hosts() {
  local cmd=(gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
  else
    "${cmd[@]}"
  fi
}

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  on_all_hosts "set -e
    [ -d purl-jax ] || git clone -q $REPO purl-jax
    cd purl-jax && git fetch -q origin $REF && git checkout -q FETCH_HEAD
    python3 -m pip install -q -U pip
    python3 -m pip install -q -e '.[gcs]' 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi

if [[ -n "${MOUNT_BUCKET:-}" ]]; then
  on_all_hosts "set -e
    sudo mkdir -p /mnt/shared && sudo chown \$USER /mnt/shared
    mountpoint -q /mnt/shared || gcsfuse --implicit-dirs ${MOUNT_BUCKET} /mnt/shared"
fi

flags=""
for f in "$@"; do flags+=" $(printf '%q' "$f")"; done
on_all_hosts "cd purl-jax && nohup purl-jax prune --distributed --config $CONFIG \
  --workdir $(printf '%q' "$WORKDIR")$flags > $LOG 2>&1 &
  echo \"started on \$(hostname): log $LOG\""
