#!/usr/bin/env bash
# The figures of issue 14 (RocketMQ's message semantics), each on a fresh release 3-member
# RaftMQ group on 127.0.99.x (bench/lib.sh):
#
#   bench/semantics.sh timer-lateness   # TIMERS (100,000) timers due over SPREAD s, DELAY s
#                                       #   after sending starts; the leader is kill -9'd in the
#                                       #   middle of the due window and started again; lateness
#                                       #   p50/p99 of every delivery (mq bench timer)
#   bench/semantics.sh timer-memory     # RSS of every member before and after PENDING
#                                       #   (1,000,000) timers due in an hour are stored
#   bench/semantics.sh transactions     # plain sends, then transactions committed at once
#                                       #   (half message + END_TRANSACTION), same settings,
#                                       #   back to back (mq bench produce [--transaction])
#   bench/semantics.sh all              # the three, each on its own fresh group
#
# Knobs: TIMERS, DELAY, SPREAD, PENDING, PRODUCERS, WINDOW, DURATION, BROKER_FLAGS, OUT,
# SKIP_BUILD=1. Prints each figure with the 1/5/15-minute load averages (`uptime`) before and
# after, and keeps everything in $OUT. Everything it starts it stops, by pid; every step is
# bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
FIGURE=${1:-all}
TIMERS=${TIMERS:-100000}
DELAY=${DELAY:-60}
SPREAD=${SPREAD:-60}
PENDING=${PENDING:-1000000}
PRODUCERS=${PRODUCERS:-2}
WINDOW=${WINDOW:-64}
DURATION=${DURATION:-20}
OUT=${OUT:-$HERE/../target/bench-semantics/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
export BIN BROKER_FLAGS RUN_DIR

case $FIGURE in
  timer-lateness | timer-memory | transactions | all) ;;
  *) echo "usage: bench/semantics.sh timer-lateness|timer-memory|transactions|all" >&2; exit 2 ;;
esac

cleanup() {
  stop_pids_in "$RUN_DIR/raftmq" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh group for each figure.
fresh_group() {
  cleanup
  rm -rf "$RUN_DIR"
  raftmq_up
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# rss_kb <pid>: resident set size in KiB
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# member_rss: "b1=<KiB> b2=<KiB> b3=<KiB>"
member_rss() {
  local out="" i
  for i in 1 2 3; do out="$out b$i=$(rss_kb "$(cat "$RUN_DIR/raftmq/b$i.pid")")"; done
  echo "${out# }"
}

# pending_timers <i>: the pending timers member i's state holds (GET /raft)
pending_timers() {
  curl -sf "http://$NET.$1:10913/raft" | sed -n 's/.*"pending_timers":\([0-9]*\).*/\1/p'
}

header() {
  {
    echo "== $1"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average (1/5/15 min) before: $(loadavg)"
    echo "raftmq: $(git -C "$ROOT" rev-parse --short HEAD), broker flags: ${BROKER_FLAGS:-none (defaults)}"
  } | tee -a "$OUT/summary.txt" >&2
}

footer() { echo "load average (1/5/15 min) after: $(loadavg)" | tee -a "$OUT/summary.txt" >&2; }

timer_lateness() {
  fresh_group
  header "timer lateness: $TIMERS timers due over ${SPREAD} s from ${DELAY} s on, leader kill -9 in the middle"
  timeout $((DELAY + SPREAD + 600)) "$BIN/mq" bench timer -c "$TIMERS" --delay "$DELAY" \
    --spread "$SPREAD" -p "$PRODUCERS" -w "$WINDOW" \
    --kill-cmd "bash '$HERE/member.sh' kill" --restart-cmd "bash '$HERE/member.sh' start" \
    2> "$OUT/timer-lateness.log" | tee -a "$OUT/summary.txt"
  footer
}

timer_memory() {
  fresh_group
  header "timer memory: RSS with $PENDING timers pending (due in about an hour)"
  sleep 5 # let the new group finish its start-up allocations before the baseline
  echo "RSS KiB before: $(member_rss)" | tee -a "$OUT/summary.txt" >&2
  timeout 1800 "$BIN/mq" bench timer -c "$PENDING" --delay 3000 --spread 600 --no-consume \
    -p "$PRODUCERS" -w "$WINDOW" 2> "$OUT/timer-memory.log" | tee -a "$OUT/summary.txt"
  wait_until "every member holding $PENDING pending timers" 1500 \
    bash -c "for i in 1 2 3; do [ \"\$(curl -sf http://$NET.\$i:10913/raft | sed -n 's/.*\"pending_timers\":\([0-9]*\).*/\1/p')\" -ge $PENDING ] || exit 1; done"
  echo "pending timers: b1=$(pending_timers 1) b2=$(pending_timers 2) b3=$(pending_timers 3)" | tee -a "$OUT/summary.txt" >&2
  echo "RSS KiB after: $(member_rss)" | tee -a "$OUT/summary.txt" >&2
  du -sh "$RUN_DIR"/raftmq/b1 | sed 's/^/data dir of b1: /' | tee -a "$OUT/summary.txt" >&2
  footer
}

transactions() {
  fresh_group
  header "transactional vs plain sends: $PRODUCERS producers x window $WINDOW, 1 KiB, ${DURATION} s each"
  local topic="BenchTx$(date +%s)"
  for mode in plain transaction; do
    local flag=""
    [ "$mode" = transaction ] && flag="--transaction"
    echo "-- $mode" | tee -a "$OUT/summary.txt" >&2
    # shellcheck disable=SC2086
    timeout $((DURATION + 120)) "$BIN/mq" bench produce -t "$topic" -p "$PRODUCERS" \
      -w "$WINDOW" -d "$DURATION" -q $flag 2> "$OUT/transactions-$mode.log" | tee -a "$OUT/summary.txt"
  done
  footer
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then build_raftmq; fi
export NAMESRV_ADDR=$NAMESRV
case $FIGURE in
  timer-lateness) timer_lateness ;;
  timer-memory) timer_memory ;;
  transactions) transactions ;;
  all) timer_lateness; timer_memory; transactions ;;
esac
log "results in $OUT/summary.txt"
