#!/usr/bin/env bash
# stack.sh -- the embedded local stack: PostgreSQL, herald-scheduler, a worker
# per channel and lane, the provider simulator and postfix's smtp-sink.
#
#   bash infra/stack.sh start     # idempotent: starts what is not running
#   bash infra/stack.sh stop      # drains workers, stops everything
#   bash infra/stack.sh status
#
# Processes run in the background with pid files and logs under
# $HERALD_DATA_DIR/stack (default /var/lib/herald as root).  Ports on
# 127.0.0.1: API 7700, scheduler 7710 (transactional) and 7711 (bulk),
# provider simulator 7780, smtp-sink 2525; override with HERALD_STACK_*_PORT.
# Bulk workers run at nice HERALD_STACK_BULK_NICE (10; 0 = off).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${HERALD_BUILD_DIR:-$ROOT/build}
if [ "$(id -u)" -eq 0 ]; then DEF=/var/lib/herald; else DEF="$HOME/.local/share/herald"; fi
export HERALD_DATA_DIR=${HERALD_DATA_DIR:-$DEF}
RUN="$HERALD_DATA_DIR/stack"
TX_PORT=${HERALD_STACK_TX_PORT:-7710}
BULK_PORT=${HERALD_STACK_BULK_PORT:-7711}
SIM_PORT=${HERALD_STACK_SIM_PORT:-7780}
SMTP_PORT=${HERALD_STACK_SMTP_PORT:-2525}
API_PORT=${HERALD_STACK_API_PORT:-7700}
BULK_NICE=${HERALD_STACK_BULK_NICE:-10} # the bulk workers' nice level (0 = as the rest)
export HERALD_SCHED_BIND_TRANSACTIONAL="tcp://127.0.0.1:$TX_PORT"
export HERALD_SCHED_BIND_BULK="tcp://127.0.0.1:$BULK_PORT"
# Tracked links and the unsubscribe URL in emails point at the local API.
export HERALD_TRACK_PUBLIC_URL=${HERALD_TRACK_PUBLIC_URL:-http://127.0.0.1:${HERALD_STACK_API_PORT:-7700}}

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

launch() { # name command...
  local name=$1; shift
  if running "$name"; then return 0; fi
  "$@" >"$RUN/$name.out" 2>"$RUN/$name.log" &
  echo $! >"$RUN/$name.pid"
}

wait_for() { # name pattern file
  for _ in $(seq 1 100); do
    grep -q "$2" "$3" 2>/dev/null && return 0
    running "$1" || { echo "stack: $1 failed to start:"; tail -n 5 "$RUN/$1.log"; exit 1; }
    sleep 0.1
  done
  echo "stack: $1 did not become ready"; exit 1
}

start() {
  mkdir -p "$RUN"
  "$B/infra/ctl/heraldctl" local start >/dev/null
  "$B/infra/ctl/heraldctl" migrate >/dev/null 2>&1 || "$B/infra/ctl/heraldctl" migrate
  # smtp-sink drops root for an unprivileged user once its socket is open.
  # It keeps each email under $RUN/mail/<day>/ so that the demo can read what
  # a recipient got (and follow its tracked links).
  mkdir -p "$RUN/mail"
  SINK_USER=()
  if [ "$(id -u)" -eq 0 ]; then SINK_USER=(-u postfix); chown postfix "$RUN/mail"; fi
  launch smtp-sink /usr/sbin/smtp-sink "${SINK_USER[@]}" -d "$RUN/mail/%Y%m%d/" 127.0.0.1:"$SMTP_PORT" 1000
  launch provsim "$B/infra/provsim/herald-provsim" --port "$SIM_PORT" --threads 2 --inbox 4096
  launch scheduler "$B/scheduler/herald-scheduler"
  launch api "$B/api/herald-api" --api-port "$API_PORT"
  wait_for scheduler "lane=bulk" "$RUN/scheduler.out"
  wait_for api "listening" "$RUN/api.out"
  wait_for provsim "listening" "$RUN/provsim.out"
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$SMTP_PORT") 2>/dev/null && break
    running smtp-sink || { echo "stack: smtp-sink failed:"; tail -n 3 "$RUN/smtp-sink.log"; exit 1; }
    sleep 0.1
  done
  # Both lanes share this host's CPUs: the bulk workers run at a lower priority
  # (docs/operations.md, "Both lanes on one host"), in a session of their own
  # whose autogroup is at that nice level too -- with the kernel's autogroups a
  # plain nice only weighs against the processes of the same session.  The
  # command execs the worker: the pid file stays the worker's.
  local LOW=()
  if [ "$BULK_NICE" != 0 ]; then
    LOW=(setsid sh -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$BULK_NICE")
  fi
  for ch in email sms messenger push webhook; do
    launch "worker-$ch-tx" "$B/workers/herald-worker" --channel "$ch" --lane transactional \
      --scheduler "tcp://127.0.0.1:$TX_PORT" --metrics-port -1
    launch "worker-$ch-bulk" "${LOW[@]}" "$B/workers/herald-worker" --channel "$ch" --lane bulk \
      --scheduler "tcp://127.0.0.1:$BULK_PORT" --metrics-port -1
  done
}

stop() {
  [ -d "$RUN" ] || return 0
  # The API first (no new work), workers next (they drain: finish or hand
  # back their leases), then the scheduler (lands every result it has), then the peers.
  for f in "$RUN"/api.pid "$RUN"/worker-*.pid "$RUN"/scheduler.pid "$RUN"/provsim.pid "$RUN"/smtp-sink.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  "$B/infra/ctl/heraldctl" local stop >/dev/null
}

status() {
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] || continue
    n=$(basename "$f" .pid)
    if running "$n"; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: dead (see $RUN/$n.log)"; fi
  done
  "$B/infra/ctl/heraldctl" local status || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
