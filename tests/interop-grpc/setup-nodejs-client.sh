#!/usr/bin/env bash
# Installs the official RocketMQ 5 Node.js client from npm into a directory of its own, for the
# gRPC interop tests (tests/tests/it/grpc_interop.rs). Never vendored: the test installs it.
#
#   tests/interop-grpc/setup-nodejs-client.sh CLIENT_DIR
#
# Installs nodejs and npm with apt-get when missing (Debian/Ubuntu, as root). A directory that
# already has the client is reused.
set -euo pipefail

CLIENT="rocketmq-client-nodejs@1.0.8"
DIR="${1:?usage: $0 CLIENT_DIR}"

# Tests run in parallel and share the directory: one installs, the others wait and reuse it.
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
resolves() {
    node -e "require(require.resolve('rocketmq-client-nodejs', { paths: ['$DIR'] }))" 2>/dev/null
}
if command -v node >/dev/null 2>&1 && resolves; then
    echo "setup-nodejs-client: $CLIENT present in $DIR"
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup-nodejs-client: node and npm are missing and cannot be installed (need root and apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends nodejs npm >/dev/null
fi
rm -rf "$DIR"
mkdir -p "$DIR"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "$CLIENT"
resolves
echo "setup-nodejs-client: installed $CLIENT in $DIR"
