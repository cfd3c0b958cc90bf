#!/usr/bin/env bash
# Writes services/llmrouter/hot-symbols.txt.gz: the functions of the release `llmrouter` that
# run when a process starts and serves requests, every role's, most shared first. build.rs
# hands the list to the linker (`--symbol-ordering-file`), which puts those functions next to
# each other at the start of the code, so a process maps a few MB of code pages instead of
# every 64 KB fault-around window its scattered functions fall in (see README, Performance).
# Usage: `just hot-symbols` (valgrind, redis-server, curl; a few minutes; not in CI). Rerun it
# after large changes: a function renamed since is simply not ordered. Names depend on the
# release profile (debug info changes some), so make the list with the settings you build with.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN="$TARGET/release/llmrouter"
OUT=services/llmrouter/hot-symbols.txt.gz
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
cargo build -q --release --bin llmrouter --bin mock-upstream

work=$(mktemp -d)
pids=() servers=()
stop() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.5; done; done
    pids=()
}
trap 'stop; kill "${servers[@]}" 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port) mock_port=$(free_port) port=$(free_port)
redis-server --port "$redis_port" --save "" --appendonly no >"$work/redis.log" 2>&1 &
servers+=($!)
"$TARGET/release/mock-upstream" --port "$mock_port" >"$work/mock.log" 2>&1 &
servers+=($!)
cat >"$work/memory.toml" <<EOF
[server]
port = $port
[scripting]
tools_path = "$PWD/config/tools"
libraries_path = "$PWD/config/libraries"
[[providers]]
name = "mock"
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
models = ["bench"]
api_keys = ["sk-bench"]
EOF
{ cat "$work/memory.toml"; printf '[redis]\nurl = "redis://127.0.0.1:%s"\n' "$redis_port"; } >"$work/redis.toml"

# Runs `llmrouter -c CONFIG ROLE` under callgrind; its executed functions go to $work/fns.NAME.
profile() {
    local name=$1 config=$2 role=$3
    valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$work/cg.$name" "$BIN" -c "$config" "$role" >"$work/vg.$name.log" 2>&1 &
    pids+=($!)
}

# Starts, serves plain and streamed chats, the usual reads, a bad body and tool calls.
load() {
    for _ in $(seq 1 120); do curl -sf -m 2 "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
    local chat="http://127.0.0.1:$port/v1/chat/completions"
    for i in $(seq 1 20); do
        curl -s -m 30 "$chat" -H 'content-type: application/json' \
            -d "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"q$i\"}]}" >/dev/null
        curl -s -m 30 "$chat" -H 'content-type: application/json' \
            -d "{\"model\":\"bench\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q$i\"}]}" >/dev/null
    done
    curl -s -m 30 "$chat" -d 'not json' >/dev/null
    for path in /v1/models /health /metrics /healthz; do curl -s -m 30 "http://127.0.0.1:$port$path" >/dev/null; done
    for _ in 1 2 3; do
        "$BIN" tool --server "http://127.0.0.1:$port" calculator '{"expression":"2+3"}' >/dev/null 2>&1 || true
    done
}

profile all-memory "$work/memory.toml" all
load
stop
for role in gateway router worker mcp-tools; do profile "$role" "$work/redis.toml" "$role"; done
load
stop

# Functions of the binary (not of libc) that ran, by how many processes ran them.
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
for f in "$work"/cg.*; do
    grep -E '^c?fn=' "$f" | sed -E 's/^c?fn=(\([0-9]+\) )?//' | sort -u
done | sort | uniq -c | sort -k1,1nr -k2 | awk '{ print $2 }' >"$work/ran"
awk 'NR == FNR { defined[$1] = 1; next } defined[$1]' "$work/defined" "$work/ran" | gzip -9n >"$OUT"
echo "$OUT: $(gzip -dc "$OUT" | wc -l) functions"
