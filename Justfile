# llmrouter tasks. `just run` serves the built-in default; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
venv := target / "pyenv"

# Serve the built-in default (all services, in memory, model `echo`) on 127.0.0.1:8080
run *ARGS:
    cargo build --release --bin llmrouter
    {{target}}/release/llmrouter all {{ARGS}}

# Every test: unit, conformance, integration, end-to-end, the official Python SDKs, and the deployment
test: test-rust test-python test-deploy

# Rust tests (redis-server must be on PATH; tests start their own)
test-rust:
    cargo build --bin llmrouter
    if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --workspace --no-fail-fast; else cargo test --workspace --no-fail-fast; fi

# The official `openai` Python package against `all` and the Redis cluster
test-python:
    cargo build --bin llmrouter
    test -x {{venv}}/bin/python || python3 -m venv {{venv}}
    {{venv}}/bin/pip install -q -r tests/python/requirements.txt
    cd tests/python && LLMROUTER_BIN={{target}}/debug/llmrouter {{venv}}/bin/python -m pytest -q

# The deployment: image, compose.yaml brought up and broken, k8s/ rendered and validated (needs Docker,
# kubectl, debootstrap; skipped loudly without them unless LLMR_REQUIRE_DEPLOY_TESTS=1, which CI sets)
test-deploy:
    test -x {{venv}}/bin/python || python3 -m venv {{venv}}
    {{venv}}/bin/pip install -q -r tests/deploy/requirements.txt
    cd tests/deploy && PATH={{venv}}/bin:$PATH {{venv}}/bin/python -m pytest -q -s -rs -p no:cacheprovider

# Build the container image (deploy/Dockerfile) as TAG; makes the base images with debootstrap if they cannot be pulled
image TAG="llmrouter:latest":
    bash deploy/build-image.sh {{TAG}}

# Start the cluster with compose.yaml (builds the image; makes deploy/secrets.env from the example if missing)
up *ARGS: image
    test -f deploy/secrets.env || cp deploy/secrets.env.example deploy/secrets.env
    docker-compose up -d {{ARGS}}

# Stop the cluster and remove its containers (add `-v` to drop the Redis volume too)
down *ARGS:
    docker-compose down {{ARGS}}

# Format the workspace
fmt:
    cargo fmt --all

# rustfmt check and clippy with warnings denied
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Validate a config file (or the built-in default).
check-config *FILE:
    cargo run -q --bin llmrouter -- {{ if FILE == "" { "" } else { "--config " + FILE } }} check-config

# Benchmark every deployment at the default configuration against the direct baseline and the
# floors, with wrk's serial and c=64 figures beside (release build; about 10 minutes).
# `--log-level warn` runs at another level, `--peers` adds LiteLLM's proxy, `--scale` runs
# 10,000 open streams instead, `--overload` a slow pool offered too much (shedding by waiting
# time), `--dead-callers` a gateway SIGKILLed with streams open, `--governance` a virtual key with
# limits against `server.token`, `--console` the CPU an open console page adds to an idle gateway.
bench *ARGS:
    cargo build --release --bin llmrouter --bin mock-upstream --bin llmr-bench
    command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
    command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
    test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; }
    {{target}}/release/llmr-bench --out {{target}}/bench {{ARGS}}

# Instructions per request of each path (nginx hop, `all`, MCP, cluster), counted by callgrind:
# repeatable whatever the machine is doing (docs/performance.md). valgrind; minutes; not in CI.
profile:
    bash tests/bench/scripts/profile.sh

# Rewrite services/llmrouter/hot-symbols.txt.gz, the functions every role runs, which release
# builds lay out together (idle RSS; see docs/performance.md). valgrind; a few minutes; not in CI.
hot-symbols:
    bash services/llmrouter/hot-symbols.sh

# Soak the cluster over Redis for MINUTES (chats, streams and tool calls at a fixed rate, a flaky
# upstream behind failover): RSS, open files and p99 per 30 s window, and what was lost. Not in CI.
soak MINUTES="30":
    cargo build --release --bin llmrouter --bin mock-upstream --bin llmr-bench
    command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
    {{target}}/release/llmr-bench --out {{target}}/bench --soak {{MINUTES}}

# Fuzz every parser for SECONDS each (libFuzzer via cargo fuzz, nightly; not in CI). A crash is
# copied to tests/fuzz/regressions/TARGET/, where `just test` runs it from then on.
fuzz SECONDS="60" *TARGETS:
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    bash tests/fuzz/run.sh {{SECONDS}} {{TARGETS}}
