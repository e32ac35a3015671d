#!/usr/bin/env bash
# A simulated LAN for pymr: N hosts in network namespaces joined by a bridge with no
# uplink, a pymr node on each, plus a "client" host without a node. Root only.
#
#   nodes/lab.sh up 3 [--slots 1]      build the LAN and start a node on h1..h3
#   nodes/lab.sh exec client pymr status   run a command on a lab host (pymr = this checkout)
#   nodes/lab.sh exec client pymr job wordcount samples/sample.txt
#   nodes/lab.sh ps                    hosts, addresses and node processes
#   nodes/lab.sh logs h2               a node's log
#   nodes/lab.sh down                  stop every node and remove every namespace
#
# Names: namespaces pymr-$LAB_NAME-br (the bridge), pymr-$LAB_NAME-h1.., pymr-$LAB_NAME-client;
# LAB_NAME defaults to "lab". Addresses 198.18.$LAB_NET.0/24 (198.18.0.0/15 is reserved for
# network benchmarks; LAB_NET defaults to 77). State (homes, logs, pids) in $LAB_DIR
# (default /tmp/pymr-$LAB_NAME). Nothing touches the machine's real interfaces: the bridge
# lives in its own namespace and has no uplink, and mDNS runs only inside the lab.
set -euo pipefail

LAB_NAME=${LAB_NAME:-lab}
LAB_NET=${LAB_NET:-77}
LAB_DIR=${LAB_DIR:-/tmp/pymr-$LAB_NAME}
PREFIX="pymr-$LAB_NAME"
BR_NS="$PREFIX-br"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
# How to run pymr on a lab host: this checkout by default.
PYMR=${PYMR:-"env PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} $PYTHON -m pymr"}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-10}

die() { echo "lab.sh: $*" >&2; exit 2; }
need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    ip netns list >/dev/null 2>&1 || die "'ip netns' is not available (install iproute2)"
}
ns_of() { echo "$PREFIX-$1"; }
addr_of() {  # host -> address: h<i> -> .<10+i>, client -> .2
    case "$1" in
        client) echo "198.18.$LAB_NET.2" ;;
        h*) echo "198.18.$LAB_NET.$((10 + ${1#h}))" ;;
        *) die "unknown host $1" ;;
    esac
}

add_host() {  # add_host NAME: a namespace with eth0 on the bridge
    local host=$1 ns; ns=$(ns_of "$1")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "v-$host" netns "$BR_NS"
    ip -n "$BR_NS" link set "v-$host" master br0 up
    ip -n "$ns" addr add "$(addr_of "$host")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0     # multicast (mDNS) goes to the LAN
    mkdir -p "$LAB_DIR/$host"
    chmod 700 "$LAB_DIR/$host"
}

on() {  # on HOST CMD...: run in a host's namespace with its own PYMR_HOME
    local host=$1; shift
    ip netns exec "$(ns_of "$host")" env PYMR_HOME="$LAB_DIR/$host" "$@"
}

cmd_up() {
    need_root
    local n=${1:-3}; shift || true
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 50 ] || die "up N: N from 1 to 50"
    ip netns list | grep -q "^$BR_NS\b" && die "lab '$LAB_NAME' is already up ('$0 down' first)"
    mkdir -p "$LAB_DIR"
    chmod 700 "$LAB_DIR"
    trap 'echo "lab.sh: up failed; tearing down" >&2; cmd_down' ERR
    ip netns add "$BR_NS"
    ip -n "$BR_NS" link set lo up
    ip -n "$BR_NS" link add br0 type bridge
    ip -n "$BR_NS" link set br0 up
    add_host client
    local i
    for i in $(seq 1 "$n"); do add_host "h$i"; done
    # One cluster key, imported on every host (as 'pymr key export' / 'key import' would).
    on h1 $PYMR keygen >/dev/null 2>&1
    local token; token=$(on h1 $PYMR key export)
    for host in client $(seq -f 'h%g' 2 "$n"); do
        on "$host" $PYMR key import "$token" >/dev/null 2>&1
    done
    for i in $(seq 1 "$n"); do
        # Not through a function: $! must be the node's own PID (ip, env and setsid exec).
        ip netns exec "$(ns_of "h$i")" env PYMR_HOME="$LAB_DIR/h$i" setsid $PYMR node "$@" \
            >"$LAB_DIR/h$i/node.log" 2>&1 < /dev/null &
        echo $! >"$LAB_DIR/h$i/node.pid"
    done
    # Wait until every node says it serves (bounded).
    local deadline=$((SECONDS + 60))
    for i in $(seq 1 "$n"); do
        until grep -q "serving cluster" "$LAB_DIR/h$i/node.log" 2>/dev/null; do
            if ! kill -0 "$(cat "$LAB_DIR/h$i/node.pid")" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
                cat "$LAB_DIR/h$i/node.log" >&2
                false
            fi
            sleep 0.2
        done
    done
    trap - ERR
    echo "lab '$LAB_NAME' up: $n node(s) on 198.18.$LAB_NET.0/24; client host: $(addr_of client)"
    echo "try: $0 exec client pymr status"
}

stop_pid() {  # stop_pid PID: SIGTERM, wait, then SIGKILL
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT_S))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.1
    done
}

cmd_down() {
    need_root
    local f ns pid
    for f in "$LAB_DIR"/*/node.pid; do
        [ -e "$f" ] || continue
        stop_pid "$(cat "$f")" &
    done
    wait
    # Anything still running inside the lab's namespaces was started by the lab.
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$LAB_DIR"
    echo "lab '$LAB_NAME' down"
}

cmd_exec() {
    need_root
    local host=${1:?exec HOST CMD...}; shift
    [ "${1:-}" = pymr ] && { shift; set -- $PYMR "$@"; }
    on "$host" "$@"
}

cmd_ps() {
    need_root
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" | sort); do
        echo "$ns: $(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}') pids: $(ip netns pids "$ns" | tr '\n' ' ')"
    done
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    exec) shift; cmd_exec "$@" ;;
    ps) cmd_ps ;;
    logs) cat "$LAB_DIR/${2:?logs HOST}/node.log" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
