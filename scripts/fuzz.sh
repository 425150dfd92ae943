#!/usr/bin/env bash
# Fuzzes the decoders that read what others wrote: the remoting frame, header, message and body
# decoders (protocol/tests/decode_properties.rs), the segment record decoder and bit-flipped
# segment files (raft/src/segment/{record,fuzz_tests}.rs), and, where built, the gRPC request
# conversions. Each round runs every property with PROPTEST_CASES cases and a fresh random seed
# (proptest's default); rounds repeat until the time budget is spent. A failure stops the run:
# proptest saves the failing case under proptest-regressions/ beside the test, and committing
# that file turns it into a regression test that `cargo test` replays on every run.
#
#   scripts/fuzz.sh [minutes]          # default 60
#
# Cases per property per round differ by target so that each round gives the decoders (fast,
# pure functions) about as much time as the bit-flipped segment files (each case writes,
# fsyncs and reopens a log): FUZZ_SCALE=1 gives 1,000,000 / 1,000,000 / 2,000 (about four
# minutes a round on this 2-core machine); FUZZ_SCALE=0.01 is a quick smoke run.
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
scale="${FUZZ_SCALE:-1}"
out=target/fuzz
mkdir -p "$out"

# name | cases per property per round at scale 1 | cargo test arguments
targets=(
    "remoting-decoders|1000000|-p raftmq-protocol --test decode_properties"
    "segment-records|1000000|-p raftmq-raft --lib segment::record"
    "segment-bit-flips|2000|-p raftmq-raft --lib segment::fuzz_tests"
)
if grep -q "fuzz_grpc" -r broker/src 2>/dev/null; then
    targets+=("grpc-requests|200000|-p raftmq-broker --lib fuzz_grpc")
fi
args_of() { local rest=${1#*|}; echo "${rest#*|}"; }
cases_of() {
    local rest=${1#*|}
    awk -v n="${rest%%|*}" -v s="$scale" 'BEGIN { c = int(n * s); if (c < 1) c = 1; print c }'
}

echo "== building the fuzz targets (release)"
for target in "${targets[@]}"; do
    # shellcheck disable=SC2086
    cargo test --release $(args_of "$target") --no-run >/dev/null
done

start=$(date +%s)
deadline=$((start + minutes * 60))
rounds=0
declare -A ran
while [ "$(date +%s)" -lt "$deadline" ]; do
    rounds=$((rounds + 1))
    for target in "${targets[@]}"; do
        name=${target%%|*}
        cases=$(cases_of "$target")
        echo "== round $rounds: $name ($cases cases per property)"
        # shellcheck disable=SC2086
        if ! PROPTEST_CASES="$cases" nice -n 19 cargo test --release $(args_of "$target") -- --test-threads=1 \
            >"$out/$name.log" 2>&1; then
            echo "FUZZ FAILURE in $name (round $rounds): see $out/$name.log and proptest-regressions/" >&2
            tail -40 "$out/$name.log" >&2
            exit 1
        fi
        ran[$name]=$(( ${ran[$name]:-0} + cases ))
        [ "$(date +%s)" -ge "$deadline" ] && break
    done
done
elapsed=$(( ($(date +%s) - start) / 60 ))
{
    echo "fuzz run at $(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ): $rounds rounds in $elapsed minutes, no failure"
    for name in "${!ran[@]}"; do
        echo "  $name: ${ran[$name]} cases for each property ($(grep -c '^test .* ok$' "$out/$name.log" || true) tests in the filter)"
    done
} | tee "$out/summary.txt"
