#!/usr/bin/env bash
# Run one command as N processes of one JAX cluster on this machine, each with D CPU devices and
# CPU collectives through gloo: multi-host training without hosts (the tests use it too).
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] -- COMMAND...
#   launch/local_multiprocess.sh -n 2 -d 2 -- .venv/bin/python -m mats_jax.train \
#       --config=configs/default.py --workdir=workdirs/two_processes
#
# Defaults: 2 processes, 2 devices each, a random port in 20000-39999. Process i gets
# MATS_COORDINATOR_ADDRESS=127.0.0.1:PORT, MATS_NUM_PROCESSES=N, MATS_PROCESS_ID=i (read by
# mats_jax.runtime.distributed), JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D.
# Every process prints to this terminal; only process 0 logs more than errors.
# SIGTERM or SIGINT is passed on to every process (like a preemption: they agree on a step, save
# a checkpoint and exit). When one process fails, the others are killed: nothing waits for a peer
# that has gone. Exit status: 0 if every process succeeded, else the first failure's.
set -euo pipefail

usage() {
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2 # the header above
  exit 2
}

processes=2
devices=2
port=$((20000 + RANDOM % 20000))
while getopts "n:d:p:h" option; do
  case "$option" in
    n) processes=$OPTARG ;;
    d) devices=$OPTARG ;;
    p) port=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ "$#" -gt 0 ] || usage

declare -A process_of # pid -> process index
forward() {
  [ "${#process_of[@]}" -eq 0 ] || kill -s "$1" "${!process_of[@]}" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward INT' INT

for ((i = 0; i < processes; i++)); do
  MATS_COORDINATOR_ADDRESS="127.0.0.1:$port" MATS_NUM_PROCESSES="$processes" MATS_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
    "$@" &
  process_of[$!]=$i
done

status=0
while [ "${#process_of[@]}" -gt 0 ]; do
  finished=""
  code=0
  wait -n -p finished "${!process_of[@]}" || code=$?
  [ -n "${finished:-}" ] || continue # a forwarded signal interrupted the wait; no process ended
  index=${process_of[$finished]}
  unset "process_of[$finished]"
  if ((code != 0 && status == 0)); then
    status=$code
    echo "local_multiprocess.sh: process $index exited with status $code; killing the others" >&2
    forward KILL
  fi
done
exit "$status"
