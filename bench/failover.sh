#!/usr/bin/env bash
# Leader failover under load: starts a release 3-member RaftMQ group on 127.0.99.x, then
# `mq bench failover` kill -9s the leader KILLS times during a steady produce, restarting the
# killed member each time, and reports the time from each kill to the next send acknowledged
# by another member (median, max) and the acknowledged messages missing afterwards (must be 0).
#
#   bench/failover.sh                                   # default Raft timers, 10 kills
#   BROKER_FLAGS="--raft-heartbeat-ms 100 --raft-election-min-ms 400 --raft-election-max-ms 800" \
#     bench/failover.sh
#   PRODUCERS=1 WINDOW=8 BATCH=128 KILLS=3 bench/failover.sh   # under full batched load (8
#       batches of 128 x 1 KiB in flight, as compare-nats.sh). Mind the disk: the group writes
#       ~250 MB/s then (3 replicas), and nothing is deleted until the run ends.
#
# Everything it starts it stops, by pid; every step is bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KILLS=${KILLS:-10}
PRODUCERS=${PRODUCERS:-2}
WINDOW=${WINDOW:-4}
BATCH=${BATCH:-1}
SIZE=${SIZE:-1024}
SETTLE=${SETTLE:-3}
OUT=${OUT:-$HERE/../target/bench-failover/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
export BIN BROKER_FLAGS RUN_DIR

cleanup() {
  stop_pids_in "$RUN_DIR/raftmq" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then build_raftmq; fi
rm -rf "$RUN_DIR"
raftmq_up
export NAMESRV_ADDR=$NAMESRV

KILL_CMD="bash '$HERE/member.sh' kill"
RESTART_CMD="bash '$HERE/member.sh' start"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), load1 $(load1), $(nproc) cores"
  echo "raftmq: $(git -C "$ROOT" rev-parse --short HEAD), broker flags: ${BROKER_FLAGS:-none (defaults)}"
  echo "load: $PRODUCERS producers x window $WINDOW x batch $BATCH, $SIZE B; $KILLS kills, ${SETTLE} s of load before each"
} | tee "$OUT/summary.txt" >&2

timeout $((KILLS * 120 + 120)) "$BIN/mq" bench failover -t "Failover$(date +%s)" --kills "$KILLS" \
  -p "$PRODUCERS" -w "$WINDOW" -b "$BATCH" -s "$SIZE" --settle "$SETTLE" \
  --kill-cmd "$KILL_CMD" --restart-cmd "$RESTART_CMD" 2> "$OUT/failover.log" | tee -a "$OUT/summary.txt"
grep '^kill' "$OUT/failover.log" >&2 || true
log "results in $OUT"
