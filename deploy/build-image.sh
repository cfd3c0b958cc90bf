#!/usr/bin/env bash
# Builds the llmrouter image from deploy/Dockerfile: a release binary (stripped), the cluster
# configuration and the example tools, staged into a build context beside the cargo target.
# Usage: deploy/build-image.sh [TAG]   (default llmrouter:latest; LLMR_PROFILE=release)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-llmrouter:latest}
PROFILE=${LLMR_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

bash deploy/base-images.sh
cargo build -q --profile "$PROFILE" --bin llmrouter
dir=$PROFILE
[ "$PROFILE" = dev ] && dir=debug
ctx="$TARGET/image-context"
rm -rf "$ctx" && mkdir -p "$ctx"
strip -o "$ctx/llmrouter" "$TARGET/$dir/llmrouter"
cp deploy/Dockerfile "$ctx/Dockerfile"
cp config/cluster.toml "$ctx/config.toml"
cp -r config/tools config/libraries "$ctx/"
docker build -q -t "$TAG" "$ctx" >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$TAG"
