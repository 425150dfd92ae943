#!/usr/bin/env bash
# member.sh kill|start: kill -9 (and wait for the end of) or start again the RaftMQ member whose
# remoting address is $BENCH_MEMBER_ADDR (127.0.99.<i>:10911), in the group under $RUN_DIR that
# bench/lib.sh started. `mq bench failover` runs it through bench/failover.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
i=${BENCH_MEMBER_ADDR#127.0.99.}
i=${i%%:*}
case $i in 1 | 2 | 3) ;; *) echo "not a member address: $BENCH_MEMBER_ADDR" >&2; exit 2 ;; esac
case ${1:-} in
  kill)
    pid=$(cat "$RUN_DIR/raftmq/b$i.pid")
    kill -9 "$pid"
    for _ in $(seq 1 500); do kill -0 "$pid" 2> /dev/null || exit 0; sleep 0.01; done
    echo "member $i (pid $pid) did not die" >&2; exit 1 ;;
  start) start_broker "$i" ;;
  *) echo "usage: member.sh kill|start" >&2; exit 2 ;;
esac
