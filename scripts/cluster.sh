#!/usr/bin/env bash
# A local RaftMQ cluster in one command: 1 NameServer and one 3-member broker group (a Raft
# group) per --groups, all on one loopback address, data and logs under one folder.
#
#   scripts/cluster.sh up     [--groups N] [--dir DIR] [--host IP] [--acl] [--tls]
#                                                                    start, wait, round trip
#   scripts/cluster.sh status [--dir DIR] [--json]                   mq cluster status
#   scripts/cluster.sh logs   [--dir DIR] [-f]                       the logs' tails (-f: follow)
#   scripts/cluster.sh down   [--dir DIR]                            stop what `up` started
#
# Ports on --host (default 127.0.0.1): NameServer 9876 (admin HTTP 9877). Group g (a, b, ...)
# member n (1..3): remoting 10911 + 1000*g + 10*(n-1), Raft +1, admin HTTP +2; so broker-a is
# 10911/10921/10931 (Raft 10912/10922/10932, admin 10913/10923/10933) and broker-b 11911/...
# RocketMQ 5 gRPC (for the official 5.x clients): 8081 + 10*g + (n-1), so broker-a is
# 8081/8082/8083 and broker-b 8091/...; a 5.x client uses $HOST:8081 as its endpoint.
# Distinct --host addresses (127.23.5.1, ...) let several clusters run side by side.
#
# --acl: every member enforces ACL (mqbroker --acl) and guards its admin HTTP with a token.
# The bootstrap admin account's keys and the token come from RAFTMQ_ACL_ADMIN_ACCESS_KEY,
# RAFTMQ_ACL_ADMIN_SECRET_KEY and RAFTMQ_ADMIN_TOKEN, or are generated, and are written to
# DIR/acl.env (mode 600; `source` it to use mq as that admin). The round trip then creates an
# account for the smoke topic with `mq acl set-account`, sends and reads with it, and shows an
# unsigned send refused.
#
# --tls: TLS on every remoting, gRPC and admin HTTP port (NameServer and members, mode
# enforcing) and mutual TLS on the Raft links. A throwaway CA and one certificate for --host
# (and 127.0.0.1, localhost) are made with openssl under DIR/tls; DIR/tls.env points mq at the
# CA (`source` it). The round trip runs over TLS, then shows a plaintext client refused.
#
# Binaries: built with `cargo build --release` (a no-op when fresh), or taken from
# $RAFTMQ_BIN_DIR when set (tests point it at target/debug). `down` stops only the processes
# whose pid files `up` wrote under DIR/pids, and only if they still are those binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND="${1:-}"
[[ $# -gt 0 ]] && shift

GROUPS_WANTED=1
DIR="$ROOT/.cluster"
HOST=127.0.0.1
FOLLOW=0
JSON=()
MEMBERS=3
ACL=0
TLS=0
MAX_GROUPS=8
NAMESRV_PORT=9876
NAMESRV_ADMIN_PORT=9877
# Bounds on waiting: a leader registered in the NameServer, a process stopping.
READY_TIMEOUT_MS=60000
STOP_TIMEOUT_S=10

usage() {
    sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --groups) GROUPS_WANTED="${2:-}"; shift 2 ;;
        --dir) DIR="${2:-}"; shift 2 ;;
        --host) HOST="${2:-}"; shift 2 ;;
        -f|--follow) FOLLOW=1; shift ;;
        --json) JSON=(--json); shift ;;
        --acl) ACL=1; shift ;;
        --tls) TLS=1; shift ;;
        -h|--help) usage ;;
        *) echo "cluster.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ "$GROUPS_WANTED" =~ ^[0-9]+$ ]] && (( GROUPS_WANTED >= 1 && GROUPS_WANTED <= MAX_GROUPS )) \
    || die "--groups must be 1..$MAX_GROUPS"
[[ "$HOST" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--host must be an IPv4 address"
[[ -n "$DIR" ]] || die "--dir must not be empty"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDS="$DIR/pids"
LOGS="$DIR/logs"
ENV_FILE="$DIR/cluster.env"
ACL_ENV_FILE="$DIR/acl.env"
TLS_DIR="$DIR/tls"
TLS_ENV_FILE="$DIR/tls.env"
# How long the throwaway certificates are valid.
TLS_DAYS=30

# A random secret of printable characters (no shell-special ones).
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }

# Exports the ACL keys and admin token of a cluster started with --acl, if it was.
load_acl_env() {
    if [[ -f "$ACL_ENV_FILE" ]]; then
        # shellcheck disable=SC1090
        source "$ACL_ENV_FILE"
    fi
}

# Exports the CA that mq trusts for a cluster started with --tls, if it was.
load_tls_env() {
    if [[ -f "$TLS_ENV_FILE" ]]; then
        # shellcheck disable=SC1090
        source "$TLS_ENV_FILE"
    fi
}

# A throwaway CA and one certificate (for $HOST, 127.0.0.1 and localhost, as server and as
# client: the Raft links are mutual) under $TLS_DIR, and the mq settings in $TLS_ENV_FILE.
make_certificates() {
    command -v openssl >/dev/null || die "--tls needs openssl to make the certificates"
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    chmod 700 "$TLS_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days "$TLS_DAYS" -subj "/CN=RaftMQ cluster.sh CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout member.key -out member.csr -subj "/CN=raftmq" 2>/dev/null
        printf '%s\n' "subjectAltName=IP:$HOST,IP:127.0.0.1,DNS:localhost" \
            "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth,clientAuth" >member.ext
        openssl x509 -req -in member.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out member.pem -days "$TLS_DAYS" -extfile member.ext 2>/dev/null
        rm -f member.csr member.ext ca.srl
    ) || die "openssl could not make the certificates"
    printf 'export RAFTMQ_TLS_CA=%q\n' "$TLS_DIR/ca.pem" >"$TLS_ENV_FILE"
}

# Where the binaries are: $RAFTMQ_BIN_DIR, or a release build.
binaries() {
    if [[ -n "${RAFTMQ_BIN_DIR:-}" ]]; then
        BIN="$RAFTMQ_BIN_DIR"
    else
        command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs), or set RAFTMQ_BIN_DIR"
        echo "building release binaries (cargo build --release; quick when nothing changed)..."
        (cd "$ROOT" && cargo build --release --quiet -p raftmq-server -p raftmq-cli)
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
    fi
    for binary in mqnamesrv mqbroker mq; do
        [[ -x "$BIN/$binary" ]] || die "$BIN/$binary is missing"
    done
}

group_letter() { printf "\\$(printf '%03o' $((97 + $1)))"; }
remoting_port() { echo $((10911 + 1000 * $1 + 10 * ($2 - 1))); }
grpc_port() { echo $((8081 + 10 * $1 + $2 - 1)); }

# Whether a process runs (a zombie, exited but not reaped by its parent, does not).
running() {
    local state
    state="$(sed -n 's/^[^)]*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# The pid in a pid file, if that process is alive and still runs the binary it was started as.
live_pid() {
    local file="$1" pid binary
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    binary="$(basename "$file" .pid)"
    binary="${binary%%-*}"
    running "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$binary" || return 1
    echo "$pid"
}

start() {
    local name="$1"; shift
    local binary="$1"; shift
    nohup "$BIN/$binary" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$binary-$name.pid"
}

up() {
    for file in "$PIDS"/*.pid; do
        [[ -e "$file" ]] || continue
        if live_pid "$file" >/dev/null; then
            die "a cluster is already running from $DIR (pid file $file); run: $0 down --dir $DIR"
        fi
        rm -f "$file"
    done
    binaries
    mkdir -p "$PIDS" "$LOGS"
    local namesrv="$HOST:$NAMESRV_PORT"
    printf 'HOST=%s\nGROUPS=%s\nNAMESRV=%s\nBIN=%s\n' "$HOST" "$GROUPS_WANTED" "$namesrv" "$BIN" >"$ENV_FILE"
    local acl_flags=()
    rm -f "$ACL_ENV_FILE"
    if ((ACL)); then
        # The members read the keys and the token from the environment (flags show in ps).
        export RAFTMQ_ACL_ADMIN_ACCESS_KEY="${RAFTMQ_ACL_ADMIN_ACCESS_KEY:-raftmq-admin}"
        export RAFTMQ_ACL_ADMIN_SECRET_KEY="${RAFTMQ_ACL_ADMIN_SECRET_KEY:-$(secret)}"
        export RAFTMQ_ADMIN_TOKEN="${RAFTMQ_ADMIN_TOKEN:-$(secret)}"
        (
            umask 077
            printf 'export RAFTMQ_ACCESS_KEY=%q\nexport RAFTMQ_SECRET_KEY=%q\nexport RAFTMQ_ADMIN_TOKEN=%q\n' \
                "$RAFTMQ_ACL_ADMIN_ACCESS_KEY" "$RAFTMQ_ACL_ADMIN_SECRET_KEY" "$RAFTMQ_ADMIN_TOKEN" >"$ACL_ENV_FILE"
        )
        acl_flags=(--acl)
    fi
    local tls_flags=() ADMIN_SCHEME=http
    rm -f "$TLS_ENV_FILE"
    if ((TLS)); then
        ADMIN_SCHEME=https
        make_certificates
        tls_flags=(--tls-mode enforcing --tls-cert "$TLS_DIR/member.pem" --tls-key "$TLS_DIR/member.key"
            --tls-ca "$TLS_DIR/ca.pem")
        echo "TLS on every remoting, gRPC and admin port and Raft link (CA: $TLS_DIR/ca.pem)"
    fi

    start namesrv mqnamesrv --listen "$namesrv" --admin-listen "$HOST:$NAMESRV_ADMIN_PORT" \
        "${tls_flags[@]}"
    echo "NameServer on $namesrv (admin $ADMIN_SCHEME://$HOST:$NAMESRV_ADMIN_PORT)"
    for ((g = 0; g < GROUPS_WANTED; g++)); do
        local broker="broker-$(group_letter "$g")" peers="" grpc_peers="" n port
        for ((n = 1; n <= MEMBERS; n++)); do
            port="$(remoting_port "$g" "$n")"
            peers+="${peers:+,}$n=$HOST:$((port + 1))"
            grpc_peers+="${grpc_peers:+,}$n=$HOST:$(grpc_port "$g" "$n")"
        done
        for ((n = 1; n <= MEMBERS; n++)); do
            port="$(remoting_port "$g" "$n")"
            start "$broker-$n" mqbroker -n "$namesrv" --broker-name "$broker" --node-id "$n" \
                --peers "$peers" --listen "$HOST:$port" --raft-listen "$HOST:$((port + 1))" \
                --admin-listen "$HOST:$((port + 2))" --grpc-listen "$HOST:$(grpc_port "$g" "$n")" \
                --grpc-peers "$grpc_peers" --data-dir "$DIR/data/$broker-$n" \
                "${acl_flags[@]}" "${tls_flags[@]}"
        done
        echo "$broker: members 1..$MEMBERS on $HOST:$(remoting_port "$g" 1),$(remoting_port "$g" 2),$(remoting_port "$g" 3) (gRPC $HOST:$(grpc_port "$g" 1),$(grpc_port "$g" 2),$(grpc_port "$g" 3))"
    done

    # mq signs as the bootstrap admin and sends the token (RAFTMQ_ACCESS_KEY, ...), and trusts
    # the cluster's CA (RAFTMQ_TLS_CA).
    load_acl_env
    load_tls_env
    echo "waiting for every group to elect a leader and register it..."
    if ! "$BIN/mq" -n "$namesrv" cluster wait --groups "$GROUPS_WANTED" --timeout-ms "$READY_TIMEOUT_MS"; then
        echo "cluster.sh: the cluster did not become ready; the logs' tails:" >&2
        tail -n 5 "$LOGS"/*.log >&2 || true
        exit 1
    fi

    echo
    echo "round trip: mq topic create, mq produce, then mq consume"
    "$BIN/mq" -n "$namesrv" topic create -t ClusterSmokeTest
    "$BIN/mq" -n "$namesrv" produce -t ClusterSmokeTest "hello from cluster.sh"
    "$BIN/mq" -n "$namesrv" consume -t ClusterSmokeTest -g cluster_sh_smoke --count 1 --idle-timeout-ms 15000
    if ((ACL)); then
        echo
        echo "ACL: an account allowed on the smoke topic and group, a send and a read with it,"
        echo "and an unsigned send refused"
        local app_secret
        app_secret="$(secret)"
        RAFTMQ_ACL_ACCOUNT_SECRET_KEY="$app_secret" "$BIN/mq" -n "$namesrv" acl set-account cluster-sh-app \
            --topic 'ClusterSmokeTest=PUB|SUB' --group 'cluster_sh_smoke=SUB'
        RAFTMQ_ACCESS_KEY=cluster-sh-app RAFTMQ_SECRET_KEY="$app_secret" \
            "$BIN/mq" -n "$namesrv" produce -t ClusterSmokeTest "hello under ACL"
        RAFTMQ_ACCESS_KEY=cluster-sh-app RAFTMQ_SECRET_KEY="$app_secret" \
            "$BIN/mq" -n "$namesrv" consume -t ClusterSmokeTest -g cluster_sh_smoke --count 1 --idle-timeout-ms 15000
        if env -u RAFTMQ_ACCESS_KEY -u RAFTMQ_SECRET_KEY \
            "$BIN/mq" -n "$namesrv" produce -t ClusterSmokeTest "unsigned" >/dev/null 2>&1; then
            die "an unsigned send was accepted under ACL"
        fi
        echo "an unsigned send was refused (NO_PERMISSION)"
        "$BIN/mq" -n "$namesrv" acl list
    fi
    if ((TLS)); then
        echo
        echo "TLS: the round trip above ran over TLS; a plaintext client is refused"
        if env -u RAFTMQ_TLS_CA "$BIN/mq" -n "$namesrv" topic route -t ClusterSmokeTest >/dev/null 2>&1; then
            die "a plaintext client was answered by a TLS-only NameServer"
        fi
        echo "a plaintext mq was refused"
    fi

    cat <<EOF

The cluster is up (data and logs under $DIR).
  export NAMESRV_ADDR=$namesrv
  RocketMQ 5.x clients (gRPC): endpoint $HOST:$(grpc_port 0 1)
  $BIN/mq topic create -t TopicTest               # 8 queues on every group
  $BIN/mq produce -t TopicTest "hello"            # or: --count 1000 --size 1024
  $BIN/mq consume -t TopicTest -g my_group --count 1
  $0 status --dir $DIR
  $0 down --dir $DIR
EOF
    if ((ACL)); then
        echo "  source $ACL_ENV_FILE    # ACL is on: mq signs as the bootstrap admin"
    fi
    if ((TLS)); then
        echo "  source $TLS_ENV_FILE    # TLS is on: mq trusts the cluster's CA"
    fi
}

down() {
    local stopped=0 file pid name
    # Brokers first (they unregister from the NameServer), then the NameServer.
    for file in "$PIDS"/mqbroker-*.pid "$PIDS"/mqnamesrv-*.pid; do
        [[ -e "$file" ]] || continue
        name="$(basename "$file" .pid)"
        if pid="$(live_pid "$file")"; then
            kill -TERM "$pid" 2>/dev/null || true
            local waited=0
            while running "$pid" && ((waited < STOP_TIMEOUT_S * 10)); do
                sleep 0.1
                waited=$((waited + 1))
            done
            if running "$pid"; then
                echo "$name did not stop within ${STOP_TIMEOUT_S}s of SIGTERM: killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
            echo "stopped $name (pid $pid)"
            stopped=$((stopped + 1))
        fi
        rm -f "$file"
    done
    echo "stopped $stopped process(es); data and logs stay in $DIR"
}

status() {
    [[ -f "$ENV_FILE" ]] || die "no cluster was started from $DIR"
    local namesrv bin
    namesrv="$(sed -n 's/^NAMESRV=//p' "$ENV_FILE")"
    bin="$(sed -n 's/^BIN=//p' "$ENV_FILE")"
    load_acl_env
    load_tls_env
    "${bin:-$ROOT/target/release}/mq" -n "$namesrv" cluster status "${JSON[@]}"
}

logs() {
    compgen -G "$LOGS/*.log" >/dev/null || die "no logs in $LOGS"
    if ((FOLLOW)); then
        tail -n 20 -F "$LOGS"/*.log
    else
        tail -n 20 "$LOGS"/*.log
    fi
}

case "$COMMAND" in
    up) up ;;
    down) down ;;
    status) status ;;
    logs) logs ;;
    *) usage ;;
esac
