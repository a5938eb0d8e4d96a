#!/usr/bin/env bash
# Runs one crpo_jax command on every worker of a Cloud TPU VM slice (v4 / v5e / v5p).
#
# Every worker runs the same command; on a Cloud TPU VM crpo_jax.main always calls
# jax.distributed.initialize(), which reads workers and coordinator from the TPU
# metadata server. The workdir must be one path every worker sees (a gcsfuse mount of
# a bucket, or a Filestore share); gs:// URLs are refused (see launch/README.md).
#
# Usage (from your workstation, with gcloud configured):
#   TPU_NAME=my-v5p-16 ZONE=us-east5-a launch/tpu_pod.sh setup
#   TPU_NAME=my-v5p-16 ZONE=us-east5-a launch/tpu_pod.sh train \
#     --config=configs/qwen3vl_8b.py --workdir=/mnt/gcs/crpo/run1 \
#     --config.model.init_from=/mnt/ckpt/Qwen3-VL-8B-Instruct \
#     --config.data.train=/mnt/data/train.jsonl --config.data.eval=/mnt/data/heldout.jsonl
#   TPU_NAME=my-v5p-16 ZONE=us-east5-a launch/tpu_pod.sh stop   # sends SIGTERM: checkpoint, exit
#
# Environment: TPU_NAME, ZONE (required); PROJECT (optional); REPO_URL (default: this
# repository's origin); REPO_DIR (default ~/crpo_jax on the workers); PYTHON (default
# python3.11: jax needs Python >= 3.11, and the tpu-ubuntu2204-base image's python3 is
# 3.10, so install python3.11 and python3.11-venv there first, or use an image with it).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
REPO_DIR="${REPO_DIR:-crpo_jax}"
PYTHON="${PYTHON:-python3.11}"
REPO_URL="${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)}"
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
    --worker=all --command "$1"
}

# Remote shell code: stop the run ~/crpo_train.pid names, if it is still alive.
STOP_EARLIER='if [ -f ~/crpo_train.pid ] && kill -0 $(cat ~/crpo_train.pid) 2>/dev/null; then
        pid=$(cat ~/crpo_train.pid); echo "stopping the earlier run $pid on $(hostname)"
        kill -TERM $pid; for _ in $(seq 60); do kill -0 $pid 2>/dev/null || break; sleep 1; done
        kill -KILL $pid 2>/dev/null || true
      fi'

cmd="${1:-}"
shift || true
case "$cmd" in
  setup)
    : "${REPO_URL:?set REPO_URL (git URL of crpo_jax)}"
    on_all_workers "set -e
      [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR
      cd $REPO_DIR && git pull --ff-only
      $PYTHON -m venv .venv && . .venv/bin/activate
      pip install -U pip && pip install -e '.[tpu]'
      python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
    ;;
  train)
    # nohup + a log per worker; the job keeps running when the ssh session ends. An
    # earlier run on the worker is stopped first (SIGTERM: it saves; SIGKILL after
    # 60 s), and a stale /tmp/libtpu_lockfile, which would keep the new process off
    # the TPU, is removed.
    args=$(printf '%q ' "$@")
    on_all_workers "cd $REPO_DIR && . .venv/bin/activate &&
      $STOP_EARLIER
      rm -f /tmp/libtpu_lockfile
      nohup python -m crpo_jax.main $args >> ~/crpo_train.log 2>&1 &
      echo \$! > ~/crpo_train.pid
      echo started on \$(hostname)"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
      --worker=0 --command "tail -n 50 -f ~/crpo_train.log"
    ;;
  stop)
    # SIGTERM to the trainer's own pid (train wrote it): every worker saves the same
    # step and exits 75. (A `pkill -f crpo_jax.main` would also match, and kill, the
    # remote shell running it.)
    on_all_workers "if [ -f ~/crpo_train.pid ] && kill -TERM \$(cat ~/crpo_train.pid) 2>/dev/null; then
        echo stopping \$(cat ~/crpo_train.pid) on \$(hostname)
      else echo no crpo_jax run on \$(hostname); fi"
    ;;
  *)
    echo "usage: $0 setup | train <crpo_jax.main flags> | logs | stop" >&2
    exit 2
    ;;
esac
