#!/usr/bin/env bash
# Installs what jepsen-lite's lazy filesystem (power-loss tests) needs, if missing:
# `fusermount3` (Debian's fuse3; the kernel side is /dev/fuse). Debian/Ubuntu, as root. Does
# nothing when it is present; says why and exits 0 when it cannot install (not root, no
# apt-get): the lazy-filesystem mount tests then skip.
set -euo pipefail

if command -v fusermount3 >/dev/null 2>&1; then
    echo "install-fuse: fusermount3 present"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-fuse: missing fuse3 (fusermount3), cannot install (need root and apt-get)"
    exit 0
fi
echo "install-fuse: installing fuse3"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends fuse3 >/dev/null; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends fuse3 >/dev/null
fi
command -v fusermount3 >/dev/null
echo "install-fuse: installed fuse3"
