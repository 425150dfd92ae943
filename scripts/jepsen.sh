#!/usr/bin/env bash
# jepsen-lite against a RaftMQ cluster of local processes: builds jepsen-lite, mqbroker and
# mqnamesrv (debug profile, side by side), then runs `jepsen-lite run` with the arguments given,
# e.g. `scripts/jepsen.sh --profile short`, `scripts/jepsen.sh --profile long --seed 42`.
# Exit status is jepsen-lite's: 0 pass, 1 safety violation, 3 not proven, 130 interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole workspace, all targets: the feature set `cargo test --workspace --all-targets`
# builds with, so after the tests this is a no-op instead of a rebuild.
cargo build --quiet --workspace --all-targets
exec "${CARGO_TARGET_DIR:-target}/debug/jepsen-lite" run "$@"
