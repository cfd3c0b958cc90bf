#!/usr/bin/env bash
# Makes the public base images that deploy/Dockerfile and compose.yaml name, for a Docker
# engine that cannot pull them (no registry here): a minimal Debian bookworm made with
# debootstrap and `docker import`ed as `debian:bookworm-slim`, and the same with Debian's
# redis-server as `redis:7.0-bookworm`. Images the engine already has are left alone.
# The root filesystems are cached (LLMR_CACHE, default ~/.cache/llmrouter) so later runs
# only import them.
set -euo pipefail

BASE=${LLMR_BASE_IMAGE:-debian:bookworm-slim}
REDIS=${LLMR_REDIS_IMAGE:-redis:7.0-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${LLMR_CACHE:-$HOME/.cache/llmrouter}
mkdir -p "$CACHE"

have() { docker image inspect "$1" >/dev/null 2>&1; }
# Where a registry answers, the real images are pulled.
for image in "$BASE" "$REDIS"; do
    have "$image" || timeout 120 docker pull -q "$image" >/dev/null 2>&1 || true
done
if have "$BASE" && have "$REDIS"; then
    exit 0
fi

base_tar="$CACHE/rootfs-bookworm.tar"
redis_tar="$CACHE/rootfs-bookworm-redis.tar"
if [ ! -s "$base_tar" ] || [ ! -s "$redis_tar" ]; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    root=$(mktemp -d)
    trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
    echo "debootstrap: a minimal Debian bookworm (ca-certificates, tzdata)" >&2
    debootstrap --variant=minbase --include=ca-certificates,tzdata bookworm "$root" "$MIRROR" >/dev/null
    slim() {
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    }
    slim
    tar -C "$root" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    echo "adding redis-server to a copy for $REDIS" >&2
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null'
    umount "$root/proc"
    mkdir -p "$root/data"
    slim
    tar -C "$root" -cf "$redis_tar.tmp" . && mv "$redis_tar.tmp" "$redis_tar"
fi
have "$BASE" || docker import --change 'CMD ["bash"]' "$base_tar" "$BASE" >/dev/null
have "$REDIS" || docker import --change 'WORKDIR /data' --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server", "--protected-mode", "no"]' "$redis_tar" "$REDIS" >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^($BASE|$REDIS) " >&2
