# Sourced by services/llmrouter/hot-symbols.sh and tests/bench/scripts/profile.sh: what both
# need to run llmrouter under callgrind — the release build, a Redis and a mock upstream on
# free ports, the two configurations (`$work/memory.toml`, `$work/redis.toml`), and profiled
# processes that are stopped by PID when the script ends.
# Sets TARGET, BIN, work, redis_port, mock_port, port; call `cg_init` first.

cg_init() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
    TARGET=${CARGO_TARGET_DIR:-$PWD/target}
    BIN="$TARGET/release/llmrouter"
    command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
    command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
    cargo build -q --release --bin llmrouter --bin mock-upstream
    work=$(mktemp -d)
    cg_pids=() cg_servers=()
    trap 'cg_stop; kill "${cg_servers[@]}" 2>/dev/null; rm -rf "$work"' EXIT
    redis_port=$(free_port) mock_port=$(free_port) port=$(free_port)
    redis-server --port "$redis_port" --save "" --appendonly no >"$work/redis.log" 2>&1 &
    cg_servers+=($!)
    "$TARGET/release/mock-upstream" --port "$mock_port" >"$work/mock.log" 2>&1 &
    cg_servers+=($!)
    mkdir -p "$work/tools"
    cp config/tools/* "$work/tools/"
    printf 'export const description = "Returns its text.";\nexport default function ({ text }) { return text; }\n' >"$work/tools/echo.js"
    cat >"$work/memory.toml" <<CONF
[server]
port = $port
[scripting]
tools_path = "$work/tools"
libraries_path = "$PWD/config/libraries"
[[providers]]
name = "mock"
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
models = ["bench"]
api_keys = ["sk-bench"]
CONF
    { cat "$work/memory.toml"; printf '[redis]\nurl = "redis://127.0.0.1:%s"\n' "$redis_port"; } >"$work/redis.toml"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# cg_run NAME COMMAND…: COMMAND under callgrind in the background (its children too when
# cg_children=yes), its profiles in $work/cg.NAME.PID[.PART], its output in
# $work/vg.NAME.log. Names are left mangled unless cg_demangle=yes.
cg_run() {
    local name=$1
    shift
    valgrind --tool=callgrind --trace-children="${cg_children:-no}" --dump-instr=no --demangle="${cg_demangle:-no}" --compress-strings=no \
        --compress-pos=no --callgrind-out-file="$work/cg.$name.%p" "$@" >"$work/vg.$name.log" 2>&1 &
    cg_pids+=($!)
}

# Stops the profiled processes (each writes its last profile as it exits).
cg_stop() {
    for p in "${cg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${cg_pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
    cg_pids=()
}

# Waits until something listens on port $1 (callgrind starts slowly).
cg_wait_port() {
    for _ in $(seq 1 240); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done
    echo "nothing listens on $1" >&2
    return 1
}
