#!/usr/bin/env bash
# Installs what jepsen-lite's network-namespace layer needs, if missing: `ip` (iproute2) and
# `nft` (nftables). Debian/Ubuntu, as root. Does nothing when both are present; says why and
# exits 0 when it cannot install (not root, no apt-get): the namespace tests then skip.
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-net-tools: ip and nft present"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-net-tools: missing ${missing[*]}, cannot install (need root and apt-get)"
    exit 0
fi
echo "install-net-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v ip >/dev/null && command -v nft >/dev/null
echo "install-net-tools: installed ${missing[*]}"
