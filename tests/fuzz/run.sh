#!/usr/bin/env bash
# Runs each fuzz target (all by default) for SECONDS under libFuzzer, starting from the seeds
# in corpus/ (new inputs it finds stay in a scratch corpus under the target dir). A crash is
# copied to regressions/TARGET/ and the run fails. Usage: run.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}; shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v llmr-fuzz-targets)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../../target}/fuzz"
failed=0
for t in "${targets[@]}"; do
    scratch="$CARGO_TARGET_DIR/corpus/$t"
    mkdir -p "$scratch" "regressions/$t"
    artifacts="$CARGO_TARGET_DIR/artifacts/$t/"
    mkdir -p "$artifacts"
    echo "== $t: ${seconds}s"
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$artifacts" 2>&1 | tail -n 4; then
        failed=1
    fi
    for crash in "$artifacts"*; do
        [ -f "$crash" ] || continue
        cp "$crash" "regressions/$t/"
        echo "kept $(basename "$crash") in tests/fuzz/regressions/$t/"
        rm "$crash"
        failed=1
    done
done
exit $failed
