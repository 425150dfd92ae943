#!/usr/bin/env bash
# Fuzzes the decoders that read what others wrote: the remoting frame, header, message and body
# decoders (protocol/tests/decode_properties.rs), the segment record decoder and bit-flipped
# segment files (raft/src/segment/{record,fuzz_tests}.rs), and, where built, the gRPC request
# conversions. Each round runs every property with PROPTEST_CASES cases and a fresh random seed
# (proptest's default); rounds repeat until the time budget is spent. A failure stops the run:
# proptest saves the failing case under proptest-regressions/ beside the test, and committing
# that file turns it into a regression test that `cargo test` replays on every run.
#
#   scripts/fuzz.sh [minutes]          # default 60; FUZZ_CASES=20000 per property per round
#
# Runs at the lowest CPU priority (nice 19), so it can share the machine. Summary:
# target/fuzz/summary.txt (rounds, cases, minutes, commit).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-60}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [minutes]  (a whole number of minutes, at least 1)" >&2
    exit 2
fi
cases="${FUZZ_CASES:-20000}"
out=target/fuzz
mkdir -p "$out"

# name | cargo test arguments
targets=(
    "remoting-decoders|-p raftmq-protocol --test decode_properties"
    "segment-records|-p raftmq-raft --lib segment::record"
    "segment-bit-flips|-p raftmq-raft --lib segment::fuzz_tests"
)
if grep -q "fuzz_grpc" -r broker/src 2>/dev/null; then
    targets+=("grpc-requests|-p raftmq-broker --lib fuzz_grpc")
fi

echo "== building the fuzz targets (release)"
for target in "${targets[@]}"; do
    # shellcheck disable=SC2086
    cargo test --release ${target#*|} --no-run >/dev/null
done

start=$(date +%s)
deadline=$((start + minutes * 60))
rounds=0
declare -A ran
while [ "$(date +%s)" -lt "$deadline" ]; do
    rounds=$((rounds + 1))
    for target in "${targets[@]}"; do
        name=${target%%|*}
        echo "== round $rounds: $name ($cases cases per property)"
        # shellcheck disable=SC2086
        if ! PROPTEST_CASES="$cases" nice -n 19 cargo test --release ${target#*|} -- --test-threads=1 \
            >"$out/$name.log" 2>&1; then
            echo "FUZZ FAILURE in $name (round $rounds): see $out/$name.log and proptest-regressions/" >&2
            tail -40 "$out/$name.log" >&2
            exit 1
        fi
        ran[$name]=$(( ${ran[$name]:-0} + 1 ))
        [ "$(date +%s)" -ge "$deadline" ] && break
    done
done
elapsed=$(( ($(date +%s) - start) / 60 ))
{
    echo "fuzz run at $(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ): $rounds rounds in $elapsed minutes, no failure"
    for name in "${!ran[@]}"; do
        echo "  $name: ${ran[$name]} rounds of $cases cases for each property ($(grep -c '^test .* ok$' "$out/$name.log" || true) tests in the filter)"
    done
} | tee "$out/summary.txt"
