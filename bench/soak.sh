#!/usr/bin/env bash
# A soak: a 3-member RaftMQ group (release build) under a steady publish rate for DURATION
# seconds with retention of RETENTION, sampling each member's disk use every SAMPLE seconds.
# Once retention has started deleting (after RETENTION plus a segment), disk use must stay
# flat: every member holds about RETENTION x rate x message size, not everything ever sent.
#
#   bench/soak.sh                              # 1 hour at 2,000 x 1 KiB/s, 5-minute retention
#   DURATION=600 RETENTION=1m bench/soak.sh    # a 10-minute version
#
# Knobs: DURATION (s), RATE (messages/s), SIZE (bytes), BATCH (messages per send), RETENTION
# (--file-reserved-time), SEGMENT (--segment-size), SAMPLE (s). Results:
# $OUT/disk.csv (elapsed_s, bytes per member, as `du` counts allocated blocks: segments, the
# state machine and the Raft metadata) and $OUT/summary.txt, also printed.
#
# Everything it starts it stops, by pid (also on Ctrl-C); the run ends by itself.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=${DURATION:-3600}
RATE=${RATE:-2000}
SIZE=${SIZE:-1024}
BATCH=${BATCH:-16}
RETENTION=${RETENTION:-5m}
SEGMENT=${SEGMENT:-64MiB}
SAMPLE=${SAMPLE:-30}
OUT=${OUT:-$HERE/../target/bench-soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
BROKER_FLAGS="$BROKER_FLAGS --file-reserved-time $RETENTION --segment-size $SEGMENT --retention-check-interval-ms 5000"

cleanup() {
  [ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2> /dev/null || true
  stop_pids_in "$RUN_DIR/raftmq" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then build_raftmq; fi
rm -rf "$RUN_DIR"
raftmq_up

log "soak: $RATE x $SIZE B/s in batches of $BATCH for $DURATION s, retention $RETENTION, segments $SEGMENT"
"$BIN/mq" -n "$NAMESRV" bench produce -t SoakTopic -p 1 -w 4 -b "$BATCH" -s "$SIZE" \
  --rate "$RATE" -d "$DURATION" --warmup 0 -q --send-timeout-ms 10000 \
  > "$OUT/produce.txt" 2> "$OUT/produce.err" &
LOAD_PID=$!

member_bytes() { du -sB1 "$RUN_DIR/raftmq/b$1" 2> /dev/null | cut -f1; }
echo "elapsed_s,b1_bytes,b2_bytes,b3_bytes" > "$OUT/disk.csv"
start=$(date +%s)
deadline=$((start + DURATION + 120))
while kill -0 "$LOAD_PID" 2> /dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
  now=$(date +%s)
  echo "$((now - start)),$(member_bytes 1),$(member_bytes 2),$(member_bytes 3)" >> "$OUT/disk.csv"
  tail -1 "$OUT/disk.csv" >&2
  # Bounded: the loop ends with the load, or at the deadline.
  sleep "$SAMPLE"
done
wait "$LOAD_PID" || log "the load generator exited with $?"
LOAD_PID=
now=$(date +%s)
echo "$((now - start)),$(member_bytes 1),$(member_bytes 2),$(member_bytes 3)" >> "$OUT/disk.csv"

python3 - "$OUT" "$RATE" "$SIZE" "$RETENTION" << 'PY' | tee "$OUT/summary.txt"
import csv, sys
out, rate, size, retention = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = list(csv.DictReader(open(f"{out}/disk.csv")))
print(f"disk use per member over time (MB, allocated), {rate:.0f} x {size} B/s, retention {retention}")
print("| elapsed | b1 | b2 | b3 | sent so far at the rate (MB) |")
print("|---:|---:|---:|---:|---:|")
step = max(1, len(rows) // 24)
for row in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
    t = int(row["elapsed_s"])
    mb = [int(row[f"b{i}_bytes"] or 0) / 1e6 for i in (1, 2, 3)]
    print(f"| {t // 60}m{t % 60:02d}s | {mb[0]:.0f} | {mb[1]:.0f} | {mb[2]:.0f} | {rate * size * t / 1e6:.0f} |")
second_half = [max(int(r[f"b{i}_bytes"] or 0) for i in (1, 2, 3)) for r in rows[len(rows) // 2:]]
if second_half:
    print(f"second half of the run: largest member {min(second_half) / 1e6:.0f}-{max(second_half) / 1e6:.0f} MB")
PY
log "produce report:"; cat "$OUT/produce.txt" >&2
log "results in $OUT"
