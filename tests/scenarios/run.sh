#!/usr/bin/env bash
# run.sh -- the four scenarios of DESIGN.md (infra/scenarios.sh) against a
# private local stack: its own PostgreSQL, scheduler, workers, API, provider
# simulator and smtp-sink, under a temp dir, on free ports, started from the
# build under test (HERALD_BUILD_DIR) and stopped -- with the temp dir
# removed -- on success, failure or interrupt.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${HERALD_BUILD_DIR:?set HERALD_BUILD_DIR to the build to test}"
export HERALD_BUILD_DIR
DIR=$(mktemp -d "${TMPDIR:-/tmp}/herald-scenarios.XXXXXX")
chmod 711 "$DIR" # the embedded PostgreSQL runs as another OS user when we are root
export HERALD_DATA_DIR="$DIR/data"
mkdir -p "$HERALD_DATA_DIR" && chmod 711 "$HERALD_DATA_DIR"

# Five distinct ports nobody listens on, below Linux's ephemeral range
# (32768-60999): a port picked inside it could be taken meanwhile by any
# outgoing connection of the tests running in parallel (CI failed so, on the
# API's port).  Another test may still take one between the probe and our
# bind: then the stack is started again on fresh ports.
PICKED=" "
free_port() { # VAR: set it (not in a subshell, so PICKED remembers)
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    case "$PICKED" in *" $p "*) continue ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    PICKED="$PICKED$p "
    printf -v "$1" '%s' "$p"
    return
  done
}
pick_ports() {
  local v
  for v in HERALD_STACK_API_PORT HERALD_STACK_TX_PORT HERALD_STACK_BULK_PORT HERALD_STACK_SIM_PORT HERALD_STACK_SMTP_PORT; do
    free_port "$v"
  done
  export HERALD_STACK_API_PORT HERALD_STACK_TX_PORT HERALD_STACK_BULK_PORT HERALD_STACK_SIM_PORT HERALD_STACK_SMTP_PORT
  export HERALD_API=http://127.0.0.1:$HERALD_STACK_API_PORT HERALD_SIM=http://127.0.0.1:$HERALD_STACK_SIM_PORT
  export HERALD_SMTP=127.0.0.1:$HERALD_STACK_SMTP_PORT
}
export HERALDCTL=$HERALD_BUILD_DIR/infra/ctl/heraldctl

cleanup() {
  local rc=$?
  bash "$ROOT/infra/stack.sh" stop >/dev/null 2>&1 || true
  pkill -KILL -f "$DIR" 2>/dev/null || true
  rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=no
for attempt in 1 2 3; do
  pick_ports
  if bash "$ROOT/infra/stack.sh" start >"$DIR/stack.out" 2>&1; then started=yes; break; fi
  grep -q "Address already in use" "$DIR/stack.out" || break
  bash "$ROOT/infra/stack.sh" stop >/dev/null 2>&1 || true
done
if [ $started != yes ]; then
  cat "$DIR/stack.out"
  echo "0 passed, 1 failed"
  exit 1
fi
bash "$ROOT/infra/scenarios.sh" "$@"
rc=$?
if [ $rc -ne 0 ]; then
  for f in "$HERALD_DATA_DIR"/stack/{scheduler,api}.log; do
    echo "--- last lines of $f"; grep -E 'warn|error|fatal' "$f" | tail -n 15
  done
fi
exit $rc
