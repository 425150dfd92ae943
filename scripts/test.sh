#!/usr/bin/env bash
# The project's one test command (README, `.ci/run`): formatting, lints, then every test.
# Long fault runs and benchmarks are separate commands (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== system tools the tests use (ip, nft, fuse, chromium)"
jepsen-lite/scripts/install-net-tools.sh
jepsen-lite/scripts/install-fuse.sh
echo "== headless Chromium for the dashboard's browser test"
scripts/install-chromium.sh

echo "== cargo test"
cargo test --workspace --all-targets
echo "== jepsen-lite short profile (~9 min of fault injection; see jepsen-lite/README.md)" && scripts/jepsen.sh --profile short --out target/jepsen-lite/short
