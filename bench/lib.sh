# bench/lib.sh -- shared by bench/pipeline, bench/lanes and bench/ratelimit
# (sourced, not run).  Builds the release binaries, makes a private temp dir
# with its own embedded PostgreSQL (production settings, fsync on), starts
# processes on free 127.0.0.1 ports and remembers their pids; on any exit
# every process started here is stopped (by pid) and the temp dir removed.
#
# After `bench_setup TARGETS...`: $ROOT $B $WORK $HC (heraldctl command) $DSN.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B="$ROOT/build"
PIDS=()
WORK=

bench_cleanup() {
	local pid
	# Newest first: workers before the scheduler, the scheduler before peers.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[i]}
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		$HC local stop >/dev/null 2>&1 || true
		# The bulk cgroup empties as its processes (the bulk workers, Postgres's bulk backends) exit.
		if [ -n "${BULK_CG:-}" ]; then
			for _ in $(seq 1 50); do rmdir "$BULK_CG" 2>/dev/null && break; sleep 0.1; done
		fi
		# BENCH_KEEP=DIR keeps the logs and samples (not the database) for a look afterwards.
		if [ -n "${BENCH_KEEP:-}" ]; then
			mkdir -p "$BENCH_KEEP"
			find "$WORK" -maxdepth 1 -type f -exec cp {} "$BENCH_KEEP/" \;
		fi
		rm -rf "$WORK"
	fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bench_setup TARGET...: build (release) and start PostgreSQL.
bench_setup() {
	# Others edit the same checkout: a tree caught mid-edit gets a few more tries.
	local try
	for try in 1 2 3 4 5 6; do
		cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -Wno-dev >/dev/null 2>&1 &&
			cmake --build "$B" -j2 --target heraldctl herald-bench-pipeline "$@" >/dev/null 2>&1 && break
		[ "$try" -eq 6 ] && { echo "bench: the build fails" >&2; exit 1; }
		sleep 10
	done
	WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
	chmod 711 "$WORK"
	export HERALD_DATA_DIR="$WORK/data"
	HC="$B/infra/ctl/heraldctl"
	DSN=$($HC local start)
	$HC migrate >/dev/null
	$HC agency create bench --name Bench >/dev/null
}

freeport() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# launch NAME CMD...: run in the background, stdout/stderr to $WORK/NAME.{out,log};
# sets LAST_PID.
launch() {
	local name=$1
	shift
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# stop PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 1 150); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
}

# wait_line NAME PATTERN FILE: until FILE has PATTERN (10 s), or NAME's process died.
wait_line() {
	for _ in $(seq 1 200); do
		grep -q "$2" "$3" 2>/dev/null && return 0
		kill -0 "$LAST_PID" 2>/dev/null || { echo "bench: $1 died:" >&2; tail -n 5 "$WORK/$1.log" >&2; exit 1; }
		sleep 0.05
	done
	echo "bench: $1 not ready" >&2
	exit 1
}

# start_scheduler [ENV=VALUE...]: herald-scheduler on two free ports, every lease traced.
start_scheduler() {
	TX_EP="tcp://127.0.0.1:$(freeport)"
	BULK_EP="tcp://127.0.0.1:$(freeport)"
	launch scheduler env HERALD_SCHED_BIND_TRANSACTIONAL="$TX_EP" HERALD_SCHED_BIND_BULK="$BULK_EP" \
		HERALD_SCHED_TRACE=true "$@" "$B/scheduler/herald-scheduler"
	SCHED_PID=$LAST_PID
	wait_line scheduler "lane=bulk" "$WORK/scheduler.out"
}

# start_worker NAME CHANNEL LANE ARGS...: sets LAST_PID.
start_worker() {
	local name=$1 ch=$2 lane=$3
	shift 3
	local ep=$BULK_EP
	[ "$lane" = transactional ] && ep=$TX_EP
	launch "$name" "$B/workers/herald-worker" --channel "$ch" --lane "$lane" --scheduler "$ep" \
		--metrics-port -1 "$@"
}

# lowprio N CMD...: sets LP to the command line that runs CMD at nice N, in a
# session of its own whose autogroup is at nice N too (N = 0: CMD as it is).  With the kernel's autogroups (sched_autogroup_enabled=1, no cpu
# cgroup) a nice value weighs only against the processes of the same session:
# bulk workers at nice 10 in the benchmark's session still took the session's
# whole share against PostgreSQL's (the postmaster runs in a session of its
# own).  A session of their own at nice N makes the bulk side weigh less than
# everything else, as CPUWeight= does for a systemd unit (docs/operations.md).
lowprio() {
	local n=$1
	shift
	if [ "$n" = 0 ]; then
		LP=("$@")
	else
		LP=(setsid sh -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$n" "$@")
	fi
}

# bulk_cgroup: BULK_CG = a new cpu cgroup of low weight (cpu.shares 102 under cgroup v1, cpu.weight
# 10 under v2, as a nice 10 process weighs) for the bulk side, when this machine has a cpu controller
# we may write; "" otherwise.  bench_cleanup removes it.  in_bulk_cgroup PID moves a process into it.
bulk_cgroup() {
	BULK_CG=
	local dir=
	if [ -w /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.shares ]; then
		dir=/sys/fs/cgroup/cpu/herald-bench-bulk.$$
		mkdir "$dir" 2>/dev/null && echo 102 >"$dir/cpu.shares" && BULK_CG=$dir
	elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null && [ -w /sys/fs/cgroup ]; then
		dir=/sys/fs/cgroup/herald-bench-bulk.$$
		mkdir "$dir" 2>/dev/null && echo 10 >"$dir/cpu.weight" && BULK_CG=$dir
	fi
	[ -n "$BULK_CG" ] || rmdir "$dir" 2>/dev/null || true
}
in_bulk_cgroup() {
	[ -z "${BULK_CG:-}" ] || echo "$1" >"$BULK_CG/cgroup.procs"
}

# start_provsim NAME ARGS...: sets SIM_PORT, LAST_PID.  SIM_NICE=N: at nice N.
start_provsim() {
	local name=$1
	shift
	SIM_PORT=$(freeport)
	lowprio "${SIM_NICE:-0}" "$B/infra/provsim/herald-provsim" --port "$SIM_PORT" --threads 2 "$@"
	launch "$name" ${SIM_CPUS:+taskset -c "$SIM_CPUS"} "${LP[@]}"
	wait_line "$name" "listening" "$WORK/$name.out"
}

# vmhwm_mb PID: peak RSS in MB (VmHWM).
vmhwm_mb() {
	awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

# log_ms LINE: the millisecond unix time of a herald log line.
log_ms() {
	date -d "$(cut -d' ' -f1 <<<"$1")" +%s%3N
}

# median of the numbers on stdin
median() {
	sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
