#!/usr/bin/env bash
# Start this machine's pymr node (what the systemd unit runs; also fine by hand).
#
#   nodes/run-node.sh [pymr node options...]     e.g. --slots 2 --name study-pc
#
# Settings come from the environment (the unit reads /etc/default/pymr-node):
#   PYMR_HOME        state directory: cluster key, node id, data (default ~/.pymr)
#   PYMR_BIN         the pymr command (default: pymr on PATH, else python3 -m pymr)
#   PYMR_NODE_ARGS   extra options, e.g. "--slots 2 --interface wlan0 --builtin-only"
#
# The node needs a cluster key: the first machine founds the cluster by itself (or
# 'pymr keygen'); on the others run 'pymr key import TOKEN' with the token from
# 'pymr key export'. Holding the key lets a member run code on this machine; use
# --builtin-only to accept only the jobs shipped with pymr.
set -euo pipefail

if [ -n "${PYMR_BIN:-}" ]; then
    read -r -a cmd <<<"$PYMR_BIN"
elif command -v pymr >/dev/null 2>&1; then
    cmd=(pymr)
else
    cmd=(python3 -m pymr)
fi
read -r -a extra <<<"${PYMR_NODE_ARGS:-}"
# exec: the node gets SIGTERM from systemd directly and withdraws its mDNS record.
exec "${cmd[@]}" node "${extra[@]}" "$@"
