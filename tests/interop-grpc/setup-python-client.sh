#!/usr/bin/env bash
# Installs the official RocketMQ 5 Python client from PyPI into a virtual environment, for the
# gRPC interop tests (tests/tests/it/grpc_python.rs). Never vendored: the test installs it.
#
#   tests/interop-grpc/setup-python-client.sh VENV_DIR
#
# Installs python3 and its venv module with apt-get when missing (Debian/Ubuntu, as root). A
# venv that already has the client is reused.
set -euo pipefail

CLIENT="rocketmq-python-client==5.1.2"
VENV="${1:?usage: $0 VENV_DIR}"

# Tests run in parallel and share the venv: one installs, the others wait and then reuse it.
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import rocketmq' 2>/dev/null; then
    echo "setup-python-client: $CLIENT present in $VENV"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup-python-client: python3 with venv is missing and cannot be installed (need root and apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends python3 python3-venv python3-pip >/dev/null
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$CLIENT"
"$VENV/bin/python" -c 'import rocketmq'
echo "setup-python-client: installed $CLIENT in $VENV"
