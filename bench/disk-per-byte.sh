#!/usr/bin/env bash
# Bytes on disk per payload byte, per member: a 3-member group (release build) stores COUNT
# messages of SIZE bytes sent in batches of BATCH, then each member's data directory is
# measured (`du`, allocated blocks: the segments of the Raft log, the state machine's redb
# file, the Raft metadata), and divided by the payload bytes acknowledged.
#
#   bench/disk-per-byte.sh                    # 200,000 x 1 KiB in batches of 128
#   COUNT=100000 SIZE=100 bench/disk-per-byte.sh
#
# Everything it starts it stops, by pid (also on Ctrl-C).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
COUNT=${COUNT:-200000}
SIZE=${SIZE:-1024}
BATCH=${BATCH:-128}
OUT=${OUT:-$HERE/../target/bench-disk/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

cleanup() {
  stop_pids_in "$RUN_DIR/raftmq" || true
  rm -rf "$RUN_DIR/raftmq"/b?/ 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then build_raftmq; fi
rm -rf "$RUN_DIR"
raftmq_up
before=$(du -sB1 "$RUN_DIR/raftmq/b1" | cut -f1)
"$BIN/mq" -n "$NAMESRV" bench produce -t DiskTopic -p 1 -w 8 -b "$BATCH" -s "$SIZE" \
  -c "$COUNT" -d 600 --warmup 0 -q --json > "$OUT/produce.json"
# Let every member apply and flush what was committed.
sleep 3
# The payload acknowledged (the count is rounded to whole batches).
payload=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$OUT/produce.json")
{
  echo "payload: $payload bytes acknowledged ($COUNT x $SIZE B asked, batches of $BATCH); empty member: $before bytes"
  echo "| member | raft log (segments) | state machine + metadata | total | per payload byte |"
  echo "|---|---:|---:|---:|---:|"
  for i in 1 2 3; do
    dir=$RUN_DIR/raftmq/b$i
    total=$(du -sB1 "$dir" | cut -f1)
    log_bytes=$(du -sB1 "$dir/raft/log" 2> /dev/null | cut -f1 || echo 0)
    python3 -c "import sys; t,l,p=map(int,sys.argv[1:]); print(f'| b$i | {l/1e6:.1f} MB | {(t-l)/1e6:.1f} MB | {t/1e6:.1f} MB | {t/p:.3f} |')" \
      "$total" "${log_bytes:-0}" "$payload"
  done
} | tee "$OUT/summary.txt"
log "results in $OUT"
