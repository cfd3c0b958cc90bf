#!/usr/bin/env bash
# `just profile`: instructions per request of each path, counted by callgrind — which counts
# instructions, not time, so the figures repeat from run to run whatever else the machine is
# doing (docs/performance.md). Paths: the nginx hop (the floor of the in-process path),
# `llmrouter all` in memory (a chat, a stream of 20 chunks, an MCP ping, a trivial tool call
# with its script hosts), and the cluster (gateway, router, worker and Redis, all profiled).
# Each: 30 requests to warm up, the counters zeroed, REQUESTS requests on one keep-alive
# connection (curl), the counters dumped. Prints a Markdown table (also to
# $TARGET/bench/profile.md). REQUESTS (300) and LOG_LEVEL (the built-in `info`) from the
# environment. valgrind, nginx, redis-server, curl; a few minutes; not in CI.
set -euo pipefail
# shellcheck source=callgrind.sh
source "$(dirname "$0")/callgrind.sh"
REQUESTS=${REQUESTS:-300}
cg_init
# LOG_LEVEL=warn profiles as `just bench` runs llmrouter; the default is the built-in `info`.
if [ -n "${LOG_LEVEL:-}" ]; then
    for f in "$work/memory.toml" "$work/redis.toml"; do printf '[telemetry]\nlog_level = "%s"\n' "$LOG_LEVEL" >>"$f"; done
fi
cg_demangle=yes
command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; }
printf '{"model":"bench","messages":[{"role":"user","content":"hello"}]}' >"$work/plain.json"
printf '{"model":"bench","stream":true,"messages":[{"role":"user","content":"hello"}]}' >"$work/stream.json"
json=(-H 'content-type: application/json')
paths=()

# REQUESTS copies of the URL on one curl command line: one keep-alive connection.
requests() {
    local url=$1 n=$2
    shift 2
    local urls=()
    for _ in $(seq 1 "$n"); do urls+=("$url"); done
    curl -sf "$@" "${urls[@]}" >/dev/null
}

# measure LABEL URL CURL-ARGS…: the profiles dumped after REQUESTS requests, added to $paths.
measure() {
    local label=$1 url=$2
    shift 2
    requests "$url" 30 "$@"
    callgrind_control -z >/dev/null
    touch "$work/mark"
    requests "$url" "$REQUESTS" "$@"
    callgrind_control -d >/dev/null
    sleep 2
    local files
    files=$(find "$work" -name 'cg.*.*' -newer "$work/mark" | paste -sd, -)
    [ -n "$files" ] || { echo "no profile for $label" >&2; exit 1; }
    paths+=("$label=$files")
}

# The nginx hop, as `just bench` runs it: one process, keep-alive upstream, no buffering.
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.log crit;
events { worker_connections 1024; }
http {
  access_log off; client_body_temp_path $work; proxy_temp_path $work;
  upstream mock { server 127.0.0.1:$mock_port; keepalive 512; }
  server { listen 127.0.0.1:$nginx_port; keepalive_requests 1000000;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } }
}
CONF
cg_run nginx "$(command -v nginx || echo /usr/sbin/nginx)" -p "$work" -c "$work/nginx.conf"
cg_wait_port "$nginx_port"
measure "nginx hop" "http://127.0.0.1:$nginx_port/v1/chat/completions" "${json[@]}" -d @"$work/plain.json"
cg_stop

cg_children=yes cg_run all "$BIN" -c "$work/memory.toml" all
cg_wait_port "$port"
chat="http://127.0.0.1:$port/v1/chat/completions"
measure "all, chat" "$chat" "${json[@]}" -d @"$work/plain.json"
measure "all, stream (20 chunks)" "$chat" "${json[@]}" -d @"$work/stream.json"
init='{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"profile","version":"1"}}}'
session=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$port/mcp" "${json[@]}" -H 'accept: application/json, text/event-stream' -d "$init" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }')
mcp=("${json[@]}" -H "mcp-session-id: $session" -H 'accept: application/json, text/event-stream')
measure "all, MCP ping" "http://127.0.0.1:$port/mcp" "${mcp[@]}" -d '{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}'
measure "all, MCP tool call (echo; with its script hosts)" "http://127.0.0.1:$port/mcp" "${mcp[@]}" \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
cg_stop

# The cluster, with a Redis of its own under callgrind too.
cluster_redis=$(free_port)
sed "s/127.0.0.1:$redis_port/127.0.0.1:$cluster_redis/" "$work/redis.toml" >"$work/cluster.toml"
cg_run redis redis-server --port "$cluster_redis" --save "" --appendonly no
cg_wait_port "$cluster_redis"
for role in router worker gateway; do cg_run "$role" "$BIN" -c "$work/cluster.toml" "$role"; done
cg_wait_port "$port"
for _ in $(seq 1 60); do curl -sf -m 5 "${json[@]}" -d @"$work/plain.json" "$chat" >/dev/null && break; sleep 1; done
measure "cluster, chat (gateway, router, worker, Redis)" "$chat" "${json[@]}" -d @"$work/plain.json"
cg_stop

mkdir -p "$TARGET/bench"
python3 tests/bench/scripts/callgrind_table.py "$REQUESTS" "${paths[@]}" | tee "$TARGET/bench/profile.md"
