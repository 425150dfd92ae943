#!/usr/bin/env bash
# Debian's headless-capable Chromium, for the dashboard's browser test
# (tests/tests/it/browser.rs). Idempotent: does nothing when /usr/bin/chromium is there.
# Needs root (apt-get), as CI and the developers' machines run.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
