#!/usr/bin/env bash
# RaftMQ (3-member group, release build) side by side with NATS JetStream (3 servers, one
# file-backed R3 stream), on this machine, same workload shapes, interleaved.
#
#   bench/compare-nats.sh            # 3 rounds, 5 s per measured run
#   ROUNDS=5 DURATION=10 bench/compare-nats.sh
#
# Shapes, each at 1 KiB and 100 B: sync publish (one in flight); pipelined publish (window
# 256); 4 publishers x window 256; RaftMQ batched publish (8 batches of 128 in flight: the same
# 1024 messages in flight as 4 x 256, one request per 128), and with 8 batches of 256 (2048 in
# flight; NATS has no batch publish and gains nothing from more in flight, so it is compared
# with NATS's window 256); consume (a fresh topic/stream
# preloaded with CONSUME_COUNT messages, read back from the start); end-to-end latency (one
# publish in flight, a consumer reading).
#
# The Raft term of the group before and after all runs is recorded too: a term that moved
# means an election happened under load (none should; run it with BROKER_FLAGS to check
# other Raft timers).
#
# Per run it records the 1-minute load average, the CPU seconds the three servers of the
# system under test used (/proc/<pid>/stat utime+stime, before and after), and the flush
# requests the disk completed (/proc/diskstats; machine-wide, so other work shows up too).
# Results: $OUT/runs.jsonl (one line per run) and $OUT/table.md (medians and RaftMQ/NATS
# ratios), also printed.
#
# NOTE: NATS 2.9.10 acknowledges a publish before it is fsynced (it has no sync_interval
# option; by default it syncs every 2 minutes), while RaftMQ acknowledges only once a majority
# of the group has fsynced the message. The comparison is against a peer doing less work.
#
# Everything it starts it stops, by pid (also on Ctrl-C); every step has a time limit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONSUME_COUNT=${CONSUME_COUNT:-200000}
SIZES=${SIZES:-"1024 100"}
OUT=${OUT:-$HERE/../target/bench-compare/$(date +%Y%m%d-%H%M%S)}
# A run that takes longer than this is stopped (and recorded as failed).
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-180}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

cleanup() {
  stop_pids_in "$RUN_DIR/raftmq" || true
  stop_pids_in "$RUN_DIR/nats" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ "$RUN_DIR/nats"/n?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  build_raftmq
  build_nats_client
fi
ensure_nats_server
rm -rf "$RUN_DIR"
raftmq_up
nats_up
export NAMESRV_ADDR=$NAMESRV
RAFTMQ_PIDS=$(raftmq_pids | tr '\n' ' ')
NATS_PIDS=$(nats_pids | tr '\n' ' ')

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "disk: $(df -h "$RUN_DIR" | awk 'NR==2 {print $1}')"
  echo "nats-server: $(nats-server --version)"
  echo "raftmq: $(git -C "$ROOT" rev-parse --short HEAD) (broker flags: ${BROKER_FLAGS:-none})"
  echo "rounds: $ROUNDS, measured seconds per run: $DURATION (+${WARMUP} s warm-up), consume count: $CONSUME_COUNT"
} | tee "$OUT/machine.txt" >&2

RUNS=$OUT/runs.jsonl
: > "$RUNS"

raft_terms() {
  for i in 1 2 3; do
    curl -sf "http://127.0.99.$i:10913/raft" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("member %s: %s term %s" % (d["node_id"], d["state"], d["term"]))' || echo "member $i: no answer"
  done | tr '\n' ';'
}
TERMS_BEFORE=$(raft_terms)

# measure <system> <shape> <size> <round> <command...>: runs the command (which prints one
# JSON report), with the counters around it, and appends one line to runs.jsonl
measure() {
  local system=$1 shape=$2 size=$3 round=$4; shift 4
  local pids
  if [ "$system" = raftmq ]; then pids=$RAFTMQ_PIDS; else pids=$NATS_PIDS; fi
  local load c0 f0 t0 c1 f1 t1 json status=ok
  load=$(load1)
  # shellcheck disable=SC2086
  c0=$(cpu_ticks $pids); f0=$(disk_flushes); t0=$(date +%s.%N)
  # (mq --json prints one pretty JSON document, nats-bench one line)
  if ! json=$(timeout "$RUN_TIMEOUT_S" "$@" 2>> "$OUT/runs.log"); then
    status=failed; json='{}'
  fi
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $pids); f1=$(disk_flushes); t1=$(date +%s.%N)
  python3 - "$system" "$shape" "$size" "$round" "$load" "$((c1 - c0))" "$((f1 - f0))" \
    "$t0" "$t1" "$status" "$json" >> "$RUNS" << 'EOF'
import json, os, sys
system, shape, size, rnd, load, ticks, flushes, t0, t1, status, report = sys.argv[1:]
try:
    report = json.loads(report)
except ValueError:
    report, status = {}, "failed"
hz = os.sysconf("SC_CLK_TCK")
cpu_s = int(ticks) / hz
total = report.get("total_messages") or 0
print(json.dumps({
    "system": system, "shape": shape, "size": int(size), "round": int(rnd),
    "status": status, "load1": float(load), "wall_s": float(t1) - float(t0),
    "server_cpu_s": cpu_s,
    "cpu_us_per_msg": cpu_s * 1e6 / total if total else None,
    "disk_flushes": int(flushes), "report": report,
}))
EOF
  local last
  last=$(tail -n 1 "$RUNS")
  log "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); p=r["report"]; l=p.get("latency_us") or {}; print("%-6s %-8s %5d B r%d: %9.0f msgs/s  p50 %s us  cpu %s us/msg  flushes %d  load %.1f  %s" % (r["system"], r["shape"], r["size"], r["round"], p.get("msgs_per_s", 0), l.get("p50", "-"), "%.1f" % r["cpu_us_per_msg"] if r["cpu_us_per_msg"] else "-", r["disk_flushes"], r["load1"], r["status"]))' "$last")"
}

MQ=$BIN/mq
NB=("$NATS_BENCH" --servers "$NATS_URLS" --json)
common=(--duration "$DURATION" --warmup "$WARMUP")

run_raftmq() {
  local shape=$1 size=$2 round=$3 topic="Bench_${shape}_${size}_r${round}"
  case $shape in
    sync) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench produce -q -t "$topic" -s "$size" -w 1 "${common[@]}" ;;
    w256) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench produce -q -t "$topic" -s "$size" -w 256 "${common[@]}" ;;
    p4w256) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench produce -q -t "$topic" -s "$size" -p 4 -w 256 "${common[@]}" ;;
    batch) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench produce -q -t "$topic" -s "$size" -b 128 -w 8 "${common[@]}" ;;
    batch256) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench produce -q -t "$topic" -s "$size" -b 256 -w 8 "${common[@]}" ;;
    consume)
      timeout "$RUN_TIMEOUT_S" "$MQ" bench produce -q -t "$topic" -s "$size" -b 64 -w 16 \
        --count "$CONSUME_COUNT" --warmup 0 --duration 120 > /dev/null 2>> "$OUT/runs.log"
      measure raftmq "$shape" "$size" "$round" "$MQ" --json bench consume -q -t "$topic" -s "$size" --count "$CONSUME_COUNT" ;;
    e2e) measure raftmq "$shape" "$size" "$round" "$MQ" --json bench e2e -q -t "$topic" -s "$size" -w 1 "${common[@]}" ;;
  esac
}

run_nats() {
  local shape=$1 size=$2 round=$3
  case $shape in
    sync) measure nats "$shape" "$size" "$round" "${NB[@]}" produce --size "$size" --window 1 "${common[@]}" ;;
    w256) measure nats "$shape" "$size" "$round" "${NB[@]}" produce --size "$size" --window 256 "${common[@]}" ;;
    p4w256) measure nats "$shape" "$size" "$round" "${NB[@]}" produce --size "$size" --producers 4 --window 256 "${common[@]}" ;;
    batch | batch256) ;; # JetStream 2.9 has no batch publish: the table compares RaftMQ's batches with p4w256 / w256
    consume)
      # a fresh stream holding exactly the preloaded messages
      timeout 60 "$NATS_BENCH" --servers "$NATS_URLS" setup --replicas 3 > /dev/null 2>> "$OUT/runs.log"
      timeout "$RUN_TIMEOUT_S" "${NB[@]}" produce --size "$size" --window 256 --count "$CONSUME_COUNT" \
        --warmup 0 --duration 120 > /dev/null 2>> "$OUT/runs.log"
      measure nats "$shape" "$size" "$round" "${NB[@]}" consume --size "$size" --count "$CONSUME_COUNT" ;;
    e2e) measure nats "$shape" "$size" "$round" "${NB[@]}" e2e --size "$size" --window 1 "${common[@]}" ;;
  esac
}

SHAPES=${SHAPES:-"sync w256 p4w256 batch batch256 consume e2e"}
for round in $(seq 1 "$ROUNDS"); do
  for size in $SIZES; do
    for shape in $SHAPES; do
      # interleaved, and who goes first alternates per round
      if [ $((round % 2)) = 1 ]; then
        run_raftmq "$shape" "$size" "$round"; run_nats "$shape" "$size" "$round"
      else
        run_nats "$shape" "$size" "$round"; run_raftmq "$shape" "$size" "$round"
      fi
    done
  done
  # keep NATS's stream from growing without bound between rounds
  timeout 60 "$NATS_BENCH" --servers "$NATS_URLS" setup --replicas 3 > /dev/null 2>> "$OUT/runs.log" || true
done

echo "raft terms before the runs: $TERMS_BEFORE" >> "$OUT/machine.txt"
echo "raft terms after the runs:  $(raft_terms)" >> "$OUT/machine.txt"
python3 "$HERE/summarize.py" "$RUNS" "$OUT/machine.txt" | tee "$OUT/table.md"
log "results in $OUT"
