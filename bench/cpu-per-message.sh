#!/usr/bin/env bash
# Server CPU work per message, counted in ways that do not depend on the machine's load: a
# release 3-member RaftMQ group on 127.0.99.x, then per shape a fixed number of messages sent
# with `mq bench produce` while `perf stat` counts each broker process (all its threads,
# including ones started during the run): task-clock (CPU time), context switches, CPU
# migrations. Wall-clock figures (msgs/s, p50) are printed too, with the load average, but on a
# shared machine only the counts per message compare across runs.
#
#   bench/cpu-per-message.sh                       # the default shapes
#   SHAPES="sync:-w 1:3000" bench/cpu-per-message.sh
#   PROFILE=1 bench/cpu-per-message.sh             # + perf record of the leader per shape
#   CALLGRIND=1 bench/cpu-per-message.sh           # member 1 (the leader) under callgrind
#
# CALLGRIND=1 runs member 1, which forms the group and so leads it, under
# `valgrind --tool=callgrind` with instrumentation on only while a shape runs: the leader's
# instructions per message (Ir), independent of load, and where they go
# ($OUT/<shape>.callgrind.txt, callgrind_annotate). valgrind slows it ~50x, so the shapes are
# smaller (CALLGRIND_SHAPES) and the election timeouts longer (CALLGRIND_BROKER_FLAGS).
#
# SHAPES: space-separated `name:mq bench produce args:messages` (args with `,` for spaces).
# Results: $OUT/table.md (also printed), $OUT/<shape>.{json,perf-stat-*.txt}, and with
# PROFILE=1 $OUT/<shape>.leader.perf.txt (perf report, children and self).
# Everything it starts it stops, by pid; every step is bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CALLGRIND=${CALLGRIND:-0}
if [ "$CALLGRIND" = 1 ]; then
  SHAPES=${SHAPES:-${CALLGRIND_SHAPES:-"sync:-w,1:300 window256:-w,256:6000 batch128:-w,8,-b,128:40000"}}
  BROKER_FLAGS=${BROKER_FLAGS:-${CALLGRIND_BROKER_FLAGS:-"--raft-election-min-ms 4000 --raft-election-max-ms 6000"}}
else
  SHAPES=${SHAPES:-"sync:-w,1:3000 window256:-w,256:60000 batch128:-w,8,-b,128:400000"}
fi
SIZE=${SIZE:-1024}
PROFILE=${PROFILE:-0}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}
OUT=${OUT:-$HERE/../target/bench-cpu/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

if ! perf stat -e task-clock true > /dev/null 2>&1; then
  echo "perf is missing (Debian: apt-get install linux-perf)" >&2
  exit 2
fi

PERF_PIDS=()
cleanup() {
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2> /dev/null || true; done
  stop_pids_in "$RUN_DIR/raftmq" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then build_raftmq; fi
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
if [ "$CALLGRIND" = 1 ]; then
  export BROKER_WRAP_1="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$RUN_DIR/callgrind.out.%p"
fi
raftmq_up
export NAMESRV_ADDR=$NAMESRV

leader_member() {
  curl -sf "http://127.0.99.10:9877/brokers" | grep -o '"leader":"127.0.99.[0-9]' | head -1 |
    sed 's/.*127.0.99.//'
}

raft_term() {
  curl -sf "http://127.0.99.$(leader_member):10913/raft" 2> /dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["term"])'
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty')"
  echo "broker flags: ${BROKER_FLAGS:-none (defaults)}; body $SIZE B"
  echo
  echo "| shape | messages | msgs/s | p50 ms | leader CPU us/msg | followers CPU us/msg (each) | leader ctx switches/msg | followers ctx switches/msg (each) | leader migrations/msg | disk flushes/msg | load1 before / after | term |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
} > "$OUT/table.md"

topic="CpuBench$(date +%s)"
# The topic exists and the client, connections and blocking threads are warm before counting.
"$BIN/mq" bench produce -t "$topic" -w 4 -s "$SIZE" -d 2 --warmup 0 -q > /dev/null

for shape in $SHAPES; do
  name=${shape%%:*}
  rest=${shape#*:}
  args=${rest%:*}
  args=${args//,/ }
  count=${rest##*:}
  leader=$(leader_member)
  load_before=$(load1)
  flushes_before=$(disk_flushes)
  term_before=$(raft_term || echo "?")
  PERF_PIDS=()
  for i in 1 2 3; do
    perf stat -x, -e task-clock,context-switches,cpu-migrations -p "$(cat "$RUN_DIR/raftmq/b$i.pid")" \
      -o "$OUT/$name.perf-stat-b$i.txt" &
    PERF_PIDS+=($!)
  done
  if [ "$CALLGRIND" = 1 ]; then
    [ "$leader" = 1 ] || { log "member $leader leads, not member 1 (under callgrind)"; exit 1; }
    callgrind_control -z "$(cat "$RUN_DIR/raftmq/b1.pid")" > /dev/null
    callgrind_control -i on "$(cat "$RUN_DIR/raftmq/b1.pid")" > /dev/null
  fi
  if [ "$PROFILE" = 1 ]; then
    perf record -e cpu-clock -F 997 -g -p "$(cat "$RUN_DIR/raftmq/b$leader.pid")" \
      -o "$OUT/$name.leader.perf.data" 2> /dev/null &
    PERF_PIDS+=($!)
  fi
  sleep 0.5
  log "shape $name: mq bench produce $args, $count messages (leader: member $leader)"
  # shellcheck disable=SC2086
  timeout "$RUN_TIMEOUT_S" "$BIN/mq" bench produce -t "$topic" $args -s "$SIZE" -c "$count" \
    -d 600 --warmup 0 -q --json > "$OUT/$name.json"
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2> /dev/null || true; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  PERF_PIDS=()
  if [ "$CALLGRIND" = 1 ]; then
    b1=$(cat "$RUN_DIR/raftmq/b1.pid")
    callgrind_control -i off "$b1" > /dev/null
    callgrind_control -d "$name" "$b1" > /dev/null
    dump=$(ls -t "$RUN_DIR"/callgrind.out.* | grep -v '\.pid' | head -1)
    mv "$dump" "$OUT/$name.callgrind.out"
    callgrind_annotate --inclusive=yes "$OUT/$name.callgrind.out" 2> /dev/null | head -120 > "$OUT/$name.callgrind.inclusive.txt" || true
    callgrind_annotate "$OUT/$name.callgrind.out" 2> /dev/null | head -80 > "$OUT/$name.callgrind.self.txt" || true
    ir=$(grep -m1 '^totals:' "$OUT/$name.callgrind.out" | awk '{print $2}')
  fi
  flushes=$(($(disk_flushes) - flushes_before))
  term_after=$(raft_term || echo "?")
  if [ "$PROFILE" = 1 ]; then
    perf report -i "$OUT/$name.leader.perf.data" --children --no-demangle -g none --percent-limit 1.5 \
      --stdio 2> /dev/null > "$OUT/$name.leader.perf.txt" || true
    perf report -i "$OUT/$name.leader.perf.data" --no-children -g none --percent-limit 0.7 \
      --stdio 2> /dev/null > "$OUT/$name.leader.self.txt" || true
    [ "${KEEP_PERF_DATA:-0}" = 1 ] || rm -f "$OUT/$name.leader.perf.data"
  fi
  python3 - "$OUT" "$name" "$leader" "$flushes" "$load_before" "$(load1)" "$term_before" "$term_after" "${ir:-}" >> "$OUT/table.md" << 'EOF'
import json, sys
out, name, leader, flushes, load_before, load_after, term_before, term_after, ir = sys.argv[1:]
report = json.load(open(f"{out}/{name}.json"))
messages = report["total_messages"]

def stat(member):
    values = {}
    for line in open(f"{out}/{name}.perf-stat-b{member}.txt"):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0] and fields[0][0].isdigit():
            values[fields[2]] = float(fields[0])
    # task-clock is in ms
    return values.get("task-clock", 0.0) * 1000.0, values.get("context-switches", 0.0), values.get("cpu-migrations", 0.0)

leader_stat = stat(int(leader))
followers = [stat(m) for m in (1, 2, 3) if m != int(leader)]
per = lambda v: v / max(messages, 1)
p50 = report["latency_us"]["p50"] / 1000.0 if report.get("latency_us") else float("nan")
print(f"| {name} | {messages} | {report['msgs_per_s']:,.0f} | {p50:.2f} | {per(leader_stat[0]):.1f} | "
      f"{' / '.join(f'{per(f[0]):.1f}' for f in followers)} | {per(leader_stat[1]):.2f} | "
      f"{' / '.join(f'{per(f[1]):.2f}' for f in followers)} | {per(leader_stat[2]):.3f} | "
      f"{per(int(flushes)):.2f} | {load_before} / {load_after} | {term_before} -> {term_after} |"
      + (f" leader instructions/msg (callgrind): {per(int(ir)):,.0f} |" if ir else ""))
EOF
done
cat "$OUT/table.md"
log "results in $OUT"
