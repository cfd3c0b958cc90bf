#!/usr/bin/env bash
# Writes services/llmrouter/hot-symbols.txt.gz: the functions of the release `llmrouter` that
# run when a process starts and serves requests, every role's, most shared first. build.rs
# hands the list to the linker (`--symbol-ordering-file`), which puts those functions next to
# each other at the start of the code, so a process maps a few MB of code pages instead of
# every 64 KB fault-around window its scattered functions fall in (see docs/performance.md).
# Usage: `just hot-symbols` (valgrind, redis-server, curl; a few minutes; not in CI). Rerun it
# after large changes: a function renamed since is simply not ordered. Names depend on the
# release profile (debug info changes some), so make the list with the settings you build with.
set -euo pipefail
# shellcheck source=../../tests/bench/scripts/callgrind.sh
source "$(dirname "$0")/../../tests/bench/scripts/callgrind.sh"
cg_init
OUT=services/llmrouter/hot-symbols.txt.gz

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

cg_run all-memory "$BIN" -c "$work/memory.toml" all
load
cg_stop
for role in gateway router worker mcp-tools; do cg_run "$role" "$BIN" -c "$work/redis.toml" "$role"; done
load
cg_stop

# Functions of the binary (not of libc) that ran, by how many processes ran them.
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
for f in "$work"/cg.*; do
    grep -E '^c?fn=' "$f" | sed -E 's/^c?fn=(\([0-9]+\) )?//' | sort -u
done | sort | uniq -c | sort -k1,1nr -k2 | awk '{ print $2 }' >"$work/ran"
awk 'NR == FNR { defined[$1] = 1; next } defined[$1]' "$work/defined" "$work/ran" | gzip -9n >"$OUT"
echo "$OUT: $(gzip -dc "$OUT" | wc -l) functions"
