# Shared by bench/compare-nats.sh and bench/failover.sh: start and stop a release RaftMQ group
# and a NATS JetStream cluster on loopback, and read the counters the reports need.
#
# Every process started here is remembered by pid (in $RUN_DIR/*.pid) and stopped by pid.
# Addresses: RaftMQ NameServer 127.0.99.10:9876, members 127.0.99.1-3 (remoting :10911,
# raft :10912, admin :10913); NATS servers n1-n3 on 127.0.99.21-23 (client :4222, cluster
# :6222).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
NATS_BENCH=${NATS_BENCH:-$BENCH_DIR/nats-client/target/release/nats-bench}
# The RaftMQ group's /24 on loopback (another run on this machine can take another: NET=127.0.98).
NET=${NET:-127.0.99}
NAMESRV=$NET.10:9876
NATS_URLS=nats://127.0.99.21:4222,nats://127.0.99.22:4222,nats://127.0.99.23:4222
# Extra mqbroker flags (for instance the Raft timers), and mqnamesrv flags (TLS).
BROKER_FLAGS=${BROKER_FLAGS:-}
NAMESRV_FLAGS=${NAMESRV_FLAGS:-}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

build_raftmq() {
  log "building release binaries (mqbroker, mqnamesrv, mq)"
  (cd "$ROOT" && cargo build --release -p raftmq-server -p raftmq-cli) >&2
}

build_nats_client() {
  log "building bench/nats-client (its own Cargo project)"
  (cd "$BENCH_DIR/nats-client" && cargo build --release) >&2
}

ensure_nats_server() {
  if ! command -v nats-server > /dev/null; then
    log "installing Debian's nats-server"
    apt-get update -qq >&2 && apt-get install -y -qq nats-server >&2
  fi
  nats-server --version >&2
}

# waits (bounded) until `cmd` succeeds
wait_until() {
  local what=$1 tries=$2; shift 2
  for _ in $(seq 1 "$tries"); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "timed out waiting for $what"; return 1
}

# start_broker <i>: member i of broker-a, data in $RUN_DIR/raftmq/b<i>. With BROKER_WRAP_<i>
# set, member i runs under that command (bench/cpu-per-message.sh runs one under valgrind).
start_broker() {
  local i=$1
  local peers="1=$NET.1:10912,2=$NET.2:10912,3=$NET.3:10912"
  local wrap_var="BROKER_WRAP_$i"
  # shellcheck disable=SC2086
  RUST_LOG=${RUST_LOG:-warn} ${!wrap_var:-} "$BIN/mqbroker" -n "$NAMESRV" --broker-name broker-a --node-id "$i" \
    --peers "$peers" --listen "$NET.$i:10911" --raft-listen "$NET.$i:10912" \
    --admin-listen "$NET.$i:10913" --grpc-listen "$NET.$i:8081" --data-dir "$RUN_DIR/raftmq/b$i" $BROKER_FLAGS \
    >> "$RUN_DIR/raftmq/b$i.out" 2>> "$RUN_DIR/raftmq/b$i.log" &
  echo $! > "$RUN_DIR/raftmq/b$i.pid"
}

raftmq_leader_registered() {
  curl -sf "http://$NET.10:9877/brokers" | grep -q '"leader":"127'
}

raftmq_up() {
  mkdir -p "$RUN_DIR/raftmq"
  # Another run on these addresses would answer for this one: refuse instead.
  if ss -ltn | grep -qE " ($NET\.10:9876|$NET\.1:10911) "; then
    log "$NET.x is taken by another RaftMQ run on this machine; use NET=127.0.<n> for this one"
    return 1
  fi
  # shellcheck disable=SC2086
  "$BIN/mqnamesrv" --listen "$NAMESRV" --admin-listen $NET.10:9877 ${NAMESRV_FLAGS:-} \
    > "$RUN_DIR/raftmq/ns.out" 2> "$RUN_DIR/raftmq/ns.log" &
  echo $! > "$RUN_DIR/raftmq/ns.pid"
  for i in 1 2 3; do start_broker "$i"; done
  wait_until "a RaftMQ leader" 300 raftmq_leader_registered
  log "RaftMQ group up (pids $(cat "$RUN_DIR"/raftmq/*.pid | tr '\n' ' '))"
}

raftmq_pids() { cat "$RUN_DIR"/raftmq/b*.pid 2> /dev/null; }

nats_up() {
  mkdir -p "$RUN_DIR/nats"
  for i in 1 2 3; do
    local routes=""
    for j in 1 2 3; do
      [ "$i" = "$j" ] || routes="$routes${routes:+, }nats-route://127.0.99.2$j:6222"
    done
    cat > "$RUN_DIR/nats/n$i.conf" << EOF
server_name: n$i
listen: 127.0.99.2$i:4222
jetstream {
  store_dir: "$RUN_DIR/nats/n$i"
}
cluster {
  name: bench
  listen: 127.0.99.2$i:6222
  routes: [ $routes ]
}
EOF
    nats-server -c "$RUN_DIR/nats/n$i.conf" > "$RUN_DIR/nats/n$i.log" 2>&1 &
    echo $! > "$RUN_DIR/nats/n$i.pid"
  done
  wait_until "the NATS JetStream cluster" 300 "$NATS_BENCH" --servers "$NATS_URLS" setup --replicas 3
  log "NATS cluster up (pids $(cat "$RUN_DIR"/nats/*.pid | tr '\n' ' '))"
}

nats_pids() { cat "$RUN_DIR"/nats/n*.pid 2> /dev/null; }

# stop_pids_in <dir>: TERM every pid file's process, then KILL what is left after 10 s
stop_pids_in() {
  local dir=$1 pids=""
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pids="$pids $(cat "$f")"
  done
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill $pids 2> /dev/null || true
  for _ in $(seq 1 50); do
    local alive=""
    for p in $pids; do kill -0 "$p" 2> /dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && return 0
    sleep 0.2
  done
  # shellcheck disable=SC2086
  kill -9 $alive 2> /dev/null || true
}

# cpu_ticks <pids...>: user+system clock ticks of those processes (0 for a gone one)
cpu_ticks() {
  local total=0
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then
      # fields after the ")" that ends the command name: utime is the 12th, stime the 13th
      local t
      t=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
      total=$((total + t))
    fi
  done
  echo "$total"
}

# disk_flushes: flush requests completed on every whole disk (/proc/diskstats field 16)
disk_flushes() {
  awk '$3 !~ /[0-9]$/ || $3 ~ /^nvme[0-9]+n[0-9]+$/ { if (NF >= 20) s += $19 } END { print s + 0 }' /proc/diskstats
}

load1() { cut -d' ' -f1 /proc/loadavg; }
