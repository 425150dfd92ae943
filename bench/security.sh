#!/usr/bin/env bash
# What TLS and ACL cost: the same release 3-member group on 127.0.99.x started four ways, one
# after the other in one run (plain, ACL, TLS, TLS + ACL), and in each the same loads sent with
# `mq bench produce`: synchronous 1 KiB sends (-w 1) and 256 in flight (-w 256). Per mode and
# load: msgs/s, p50 latency, and the brokers' CPU per message (user + system time of the three
# member processes over the measured run, from /proc: independent of the machine's load);
# then each as a ratio to plain. TLS: every link (clients, NameServer, Raft between members)
# with a throwaway CA made by openssl, mode enforcing. ACL: every member enforces it, mq signs
# with an account allowed on the topic (HMAC-SHA1 per request, checked on every member).
#
#   bench/security.sh                  # COUNT_SYNC=3000 COUNT_W256=60000 by default
#   SKIP_BUILD=1 MODES="plain tls" bench/security.sh
#
# Results: $OUT/table.md (also printed) and $OUT/<mode>-<load>.json. Everything it starts it
# stops, by pid; every run is bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODES=${MODES:-"plain acl tls tls+acl"}
COUNT_SYNC=${COUNT_SYNC:-3000}
COUNT_W256=${COUNT_W256:-60000}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}
OUT=${OUT:-$HERE/../target/bench-security/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RUN_DIR=$OUT/data
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
MQ=$BIN/mq

cleanup() { stop_pids_in "$RUN_DIR/raftmq"; }
trap cleanup EXIT

[ "${SKIP_BUILD:-0}" = 1 ] || build_raftmq

# A throwaway CA and one certificate for every process (IP SANs of the group's /24).
make_certs() {
  local dir=$OUT/certs
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=raftmq-bench-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2> /dev/null
  local sans="IP:$NET.1,IP:$NET.2,IP:$NET.3,IP:$NET.10,IP:127.0.0.1"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=raftmq-bench" \
    -keyout "$dir/node.key" -out "$dir/node.csr" 2> /dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" > "$dir/ext.cnf"
  openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/node.pem" 2> /dev/null
  echo "$dir"
}
CERTS=$(make_certs)
TLS_SERVER="--tls-mode enforcing --tls-cert $CERTS/node.pem --tls-key $CERTS/node.key --tls-ca $CERTS/ca.pem"
TLS_CLIENT=(--tls --tls-ca "$CERTS/ca.pem")

export RAFTMQ_ACL_ADMIN_ACCESS_KEY=bench-admin
RAFTMQ_ACL_ADMIN_SECRET_KEY=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
export RAFTMQ_ACL_ADMIN_SECRET_KEY
APP_KEY=bench-app
APP_SECRET=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

printf '| mode | load | msgs/s | p50 us | broker CPU us/msg | msgs/s vs plain | CPU vs plain |\n|---|---|---:|---:|---:|---:|---:|\n' > "$OUT/table.md"
declare -A PLAIN_RATE PLAIN_CPU

for mode in $MODES; do
  tls=0 acl=0
  case $mode in
    plain) ;;
    acl) acl=1 ;;
    tls) tls=1 ;;
    tls+acl) tls=1 acl=1 ;;
    *) echo "unknown mode $mode (plain acl tls tls+acl)" >&2; exit 2 ;;
  esac
  BROKER_FLAGS="" NAMESRV_FLAGS=""
  client=()
  if ((tls)); then
    BROKER_FLAGS="$TLS_SERVER" NAMESRV_FLAGS="$TLS_SERVER"
    client+=("${TLS_CLIENT[@]}")
  fi
  ((acl)) && BROKER_FLAGS="$BROKER_FLAGS --acl --acl-admin-access-key $RAFTMQ_ACL_ADMIN_ACCESS_KEY"
  export BROKER_FLAGS NAMESRV_FLAGS
  rm -rf "$RUN_DIR/raftmq"
  log "mode $mode: starting the group"
  raftmq_up
  topic="Security${mode//+/}"
  signed=()
  if ((acl)); then
    # The bootstrap admin creates the account the load signs with.
    admin=(--access-key "$RAFTMQ_ACL_ADMIN_ACCESS_KEY" --secret-key "$RAFTMQ_ACL_ADMIN_SECRET_KEY")
    timeout 60 "$MQ" -n "$NAMESRV" "${client[@]}" topic create -t "$topic" "${admin[@]}" > /dev/null
    RAFTMQ_ACL_ACCOUNT_SECRET_KEY=$APP_SECRET timeout 60 "$MQ" -n "$NAMESRV" "${client[@]}" \
      acl set-account "$APP_KEY" --topic "$topic=PUB|SUB" "${admin[@]}" > /dev/null
    signed=(--access-key "$APP_KEY" --secret-key "$APP_SECRET")
  fi
  # shellcheck disable=SC2046
  pids=$(raftmq_pids | tr '\n' ' ')
  for load in sync w256; do
    case $load in
      sync) args=(-w 1 -c "$COUNT_SYNC") ;;
      w256) args=(-w 256 -c "$COUNT_W256") ;;
    esac
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    timeout "$RUN_TIMEOUT_S" "$MQ" -n "$NAMESRV" "${client[@]}" --json bench produce -q \
      -t "$topic" -s 1024 -d 120 "${args[@]}" "${signed[@]}" > "$OUT/$mode-$load.json"
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    read -r rate p50 cpu < <(python3 - "$OUT/$mode-$load.json" "$before" "$after" "$(getconf CLK_TCK)" << 'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report = report.get("report", report)
# CPU is counted over the whole run, warm-up included: per message of the whole run.
msgs = report.get("total_messages") or report.get("messages") or 0
rate = report.get("msgs_per_s", 0)
p50 = (report.get("latency_us") or {}).get("p50", 0)
ticks = int(sys.argv[3]) - int(sys.argv[2])
cpu_us = ticks * 1e6 / int(sys.argv[4])
print(f"{rate:.0f} {p50} {cpu_us / msgs if msgs else 0:.1f}")
PY
)
    if [ "$mode" = plain ]; then PLAIN_RATE[$load]=$rate PLAIN_CPU[$load]=$cpu; fi
    ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2] or 0); print(f'{a / b:.2f}' if b else '-')" "$1" "$2"; }
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$load" "$rate" "$p50" "$cpu" \
      "$(ratio "$rate" "${PLAIN_RATE[$load]:-}")" "$(ratio "$cpu" "${PLAIN_CPU[$load]:-}")" >> "$OUT/table.md"
    log "mode $mode, $load: $rate msgs/s, p50 $p50 us, $cpu us CPU per message"
  done
  cleanup
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load $(load1)" >> "$OUT/table.md"
cat "$OUT/table.md"
