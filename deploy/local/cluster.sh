#!/usr/bin/env bash
# cluster.sh: a local raftgate cluster for hands-on chaos.
#
# Nodes are separate `raftgate serve` processes on loopback with the port
# layout of `raftgate dev` (node i, from 1: base+10(i-1) proxy, +1 control,
# +2 raft, +3 gossip, +4 rpc, +5 admin), started with --fault-injection
# (test only) so `partition` works. State (data, logs, pids) lives under
# $RAFTGATE_LOCAL_DIR (default /tmp/raftgate-local).
#
#   cluster.sh start [N]                start N nodes (default 3)
#   cluster.sh stop                     stop every node (SIGTERM)
#   cluster.sh status                   processes, and CLUSTER_STATUS
#   cluster.sh kill <node>              SIGKILL one node (e.g. node2)
#   cluster.sh pause|resume <node>      SIGSTOP / SIGCONT
#   cluster.sh restart <node>           start a killed or stopped node again
#   cluster.sh partition <node> <peer>...  cut node off from peers (both ways)
#   cluster.sh heal <node>              remove node's partitions (both ways)
#   cluster.sh logs <node>              follow a node's log
#   cluster.sh clean                    stop and delete all state
#
# Environment: RAFTGATE_BIN (default: build ./cmd/raftgate into the state
# directory), RAFTGATE_BASE_PORT (17000), RAFTGATE_LOCAL_DIR.
set -euo pipefail

DIR=${RAFTGATE_LOCAL_DIR:-/tmp/raftgate-local}
BASE=${RAFTGATE_BASE_PORT:-17000}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() { echo "cluster.sh: $*" >&2; exit 1; }

binary() {
	if [[ -n "${RAFTGATE_BIN:-}" ]]; then
		echo "$RAFTGATE_BIN"
		return
	fi
	local bin="$DIR/raftgate"
	if [[ ! -x "$bin" ]] || [[ -n "$(find "$REPO" -name '*.go' -newer "$bin" -print -quit)" ]]; then
		echo "building $bin" >&2
		(cd "$REPO" && go build -o "$bin" ./cmd/raftgate) || die "go build failed"
	fi
	echo "$bin"
}

# port <node-number> <offset>
port() { echo $((BASE + 10 * ($1 - 1) + $2)); }

num() {
	[[ "${1:-}" =~ ^node([1-9])$ ]] || die "name a node as node1..node9, not '${1:-}'"
	echo "${BASH_REMATCH[1]}"
}

count() { cat "$DIR/nodes" 2>/dev/null || echo 0; }

pid_of() { cat "$DIR/node$1.pid" 2>/dev/null || true; }

running() {
	local pid st
	pid=$(pid_of "$1")
	[[ -n "$pid" ]] || return 1
	# A killed node may linger as a zombie until its parent reaps it.
	st=$(ps -o state= -p "$pid" 2>/dev/null | tr -d ' ')
	[[ -n "$st" && "$st" != Z* ]]
}

start_node() {
	local i=$1 n bin join=()
	n=$(count)
	bin=$(binary)
	running "$i" && die "node$i is already running (pid $(pid_of "$i"))"
	for ((j = 1; j <= n; j++)); do
		((j != i)) && join+=("127.0.0.1:$(port "$j" 3)")
	done
	local joinflag=()
	((${#join[@]} > 0)) && joinflag=(--join "$(IFS=,; echo "${join[*]}")")
	mkdir -p "$DIR/node$i"
	nohup "$bin" serve --node-id "node$i" --data-dir "$DIR/node$i" \
		--http-addr "127.0.0.1:$(port "$i" 0)" --control-addr "127.0.0.1:$(port "$i" 1)" \
		--raft-addr "127.0.0.1:$(port "$i" 2)" --gossip-addr "127.0.0.1:$(port "$i" 3)" \
		--rpc-addr "127.0.0.1:$(port "$i" 4)" --admin-addr "127.0.0.1:$(port "$i" 5)" \
		--bootstrap-expect "$n" --fault-injection "${joinflag[@]}" \
		>>"$DIR/node$i.log" 2>&1 </dev/null &
	echo $! >"$DIR/node$i.pid"
	echo "node$i: pid $!, control 127.0.0.1:$(port "$i" 1), proxy 127.0.0.1:$(port "$i" 0), admin 127.0.0.1:$(port "$i" 5)"
}

admin() { # admin <node-number> <method> <path> [json]
	local url="http://127.0.0.1:$(port "$1" 5)$3"
	if [[ -n "${4:-}" ]]; then
		curl -sS --max-time 10 -X "$2" -H 'Content-Type: application/json' -d "$4" "$url"
	else
		curl -sS --max-time 10 -X "$2" "$url"
	fi
}

control() { # control <node-number> <line>: one command, one answer line
	exec 3<>"/dev/tcp/127.0.0.1/$(port "$1" 1)" 2>/dev/null || return 1
	printf '%s\n' "$2" >&3
	local line
	IFS= read -r -t 10 line <&3 || true
	exec 3<&- 3>&-
	echo "$line"
}

json_list() { # json_list node2 node3 -> ["node2","node3"]
	local out="" p
	for p in "$@"; do
		num "$p" >/dev/null
		out+="${out:+,}\"$p\""
	done
	echo "[$out]"
}

cmd=${1:-}
shift || true
case "$cmd" in
start)
	n=${1:-3}
	[[ "$n" =~ ^[1-9]$ ]] || die "start takes 1 to 9 nodes"
	if (($(count) > 0)); then
		for ((i = 1; i <= $(count); i++)); do running "$i" && die "a cluster is running in $DIR; stop it first"; done
	fi
	mkdir -p "$DIR"
	echo "$n" >"$DIR/nodes"
	echo "state: $DIR"
	for ((i = 1; i <= n; i++)); do start_node "$i"; done
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$(port 1 5)/readyz" >/dev/null 2>&1 && break
		sleep 0.2
	done
	control 1 CLUSTER_STATUS
	;;
stop)
	for ((i = 1; i <= $(count); i++)); do
		if running "$i"; then
			kill -CONT "$(pid_of "$i")" 2>/dev/null || true
			kill -TERM "$(pid_of "$i")"
			echo "node$i: SIGTERM"
		fi
	done
	;;
status)
	echo "state: $DIR"
	for ((i = 1; i <= $(count); i++)); do
		if running "$i"; then
			st=$(ps -o state= -p "$(pid_of "$i")" | tr -d ' ')
			[[ "$st" == T* ]] && st="stopped (paused)" || st="running"
			echo "node$i: pid $(pid_of "$i") $st, faults $(admin "$i" GET /v1/faults 2>/dev/null || echo '?')"
		else
			echo "node$i: down"
		fi
	done
	for ((i = 1; i <= $(count); i++)); do
		if running "$i"; then
			control "$i" CLUSTER_STATUS && break
		fi
	done
	;;
kill)
	i=$(num "${1:-}")
	running "$i" || die "node$i is not running"
	kill -KILL "$(pid_of "$i")"
	echo "node$i: SIGKILL"
	;;
pause)
	i=$(num "${1:-}")
	running "$i" || die "node$i is not running"
	kill -STOP "$(pid_of "$i")"
	echo "node$i: SIGSTOP (resume with: $0 resume node$i)"
	;;
resume)
	i=$(num "${1:-}")
	running "$i" || die "node$i is not running"
	kill -CONT "$(pid_of "$i")"
	echo "node$i: SIGCONT"
	;;
restart)
	i=$(num "${1:-}")
	if running "$i"; then
		kill -CONT "$(pid_of "$i")" 2>/dev/null || true
		kill -TERM "$(pid_of "$i")"
		for _ in $(seq 150); do running "$i" || break; sleep 0.2; done
		running "$i" && die "node$i did not stop within 30s"
	fi
	start_node "$i"
	;;
partition)
	i=$(num "${1:-}")
	shift || true
	(($# > 0)) || die "partition <node> <peer>..."
	admin "$i" POST /v1/faults "{\"partition\":$(json_list "$@")}"
	for p in "$@"; do
		admin "$(num "$p")" POST /v1/faults "{\"partition\":[\"node$i\"]}" >/dev/null
	done
	echo "node$i cut off from $*"
	;;
heal)
	i=$(num "${1:-}")
	# Partitions are per node; heal this node and take it off every peer's list.
	admin "$i" POST /v1/faults '{"partition":[]}' >/dev/null
	for ((j = 1; j <= $(count); j++)); do
		((j == i)) && continue
		running "$j" || continue
		cur=$(admin "$j" GET /v1/faults 2>/dev/null || echo '{}')
		rest=$(echo "$cur" | tr -d '{}[]" ' | sed 's/^partition://' | tr ',' '\n' | grep -v "^node$i\$" | grep . || true)
		admin "$j" POST /v1/faults '{"partition":[]}' >/dev/null
		if [[ -n "$rest" ]]; then
			# shellcheck disable=SC2086
			admin "$j" POST /v1/faults "{\"partition\":$(json_list $rest)}" >/dev/null
		fi
	done
	echo "node$i healed"
	;;
logs)
	i=$(num "${1:-}")
	exec tail -n 50 -F "$DIR/node$i.log"
	;;
clean)
	"$0" stop || true
	for ((i = 1; i <= $(count); i++)); do
		for _ in $(seq 100); do running "$i" || break; sleep 0.2; done
	done
	rm -rf "$DIR"
	echo "removed $DIR"
	;;
*)
	sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
	[[ -z "$cmd" || "$cmd" == help || "$cmd" == -h || "$cmd" == --help ]] || exit 2
	;;
esac
