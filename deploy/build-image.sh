#!/bin/sh
# Build the pypi-kafka-bridge image from deploy/Dockerfile; run from anywhere (`make image`).
#
#   deploy/build-image.sh [TAG]        TAG defaults to pypi-kafka-bridge:<version in pyproject>
#
# With docker when a daemon answers, otherwise with buildah (no daemon, rootful, chroot
# isolation). The base is the official python:3.11-slim-bookworm when it can be pulled; when
# no container registry is reachable, buildah builds on a base made here from Debian bookworm's
# own packages with debootstrap (python3 3.11, python3-venv, ca-certificates), kept in the
# container storage as localhost/pypi-kafka-bridge-base:bookworm and reused by later builds.
#
# Environment:
#   IMAGE_BUILDER    docker | buildah          (default: docker if its daemon answers)
#   PYTHON_IMAGE     base for both stages      (default: as described above)
#   DEBIAN_MIRROR    for debootstrap           (default: http://deb.debian.org/debian)
#   PIP_CA_FILE      CA bundle pip must trust during the build, e.g. behind a TLS-inspecting
#                    proxy; passed as a build secret, never stored (default: $PIP_CERT if set)
#   CONTAINERS_STORAGE_CONF  buildah's storage (the tests keep theirs in ~/.cache/pypi-kafka-bridge/image)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
TAG=${1:-pypi-kafka-bridge:$VERSION}
OFFICIAL=docker.io/library/python:3.11-slim-bookworm
DEBIAN_BASE=localhost/pypi-kafka-bridge-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_FILE=${PIP_CA_FILE:-${PIP_CERT:-}}

say() { echo "build-image: $*" >&2; }

secret_args() {
    if [ -n "$CA_FILE" ] && [ -s "$CA_FILE" ]; then
        echo "--secret id=pip_ca,src=$CA_FILE"
    fi
}

if [ -z "${IMAGE_BUILDER:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        IMAGE_BUILDER=docker
    elif command -v buildah >/dev/null 2>&1; then
        IMAGE_BUILDER=buildah
    else
        say "neither a docker daemon nor buildah: install buildah (Debian: apt-get install buildah)"
        exit 1
    fi
fi

if [ "$IMAGE_BUILDER" = docker ]; then
    say "docker build -t $TAG"
    # shellcheck disable=SC2046 # the secret flag is two words or none
    exec docker build -f deploy/Dockerfile -t "$TAG" \
        ${PYTHON_IMAGE:+--build-arg PYTHON_IMAGE="$PYTHON_IMAGE"} $(secret_args) .
fi

# --- buildah -------------------------------------------------------------------------------

# The Debian base: debootstrap's minimal variant plus what the Dockerfile needs, docs, manuals,
# locales and apt's caches left out. debootstrap needs root (it chroots to configure packages).
make_debian_base() {
    command -v debootstrap >/dev/null 2>&1 || {
        say "no registry image and no debootstrap: install debootstrap (Debian package)"
        exit 1
    }
    work=$(mktemp -d "${TMPDIR:-/tmp}/pypi-bridge-rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    say "making $DEBIAN_BASE with debootstrap from $MIRROR (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase \
        bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        say "debootstrap failed"
        exit 1
    }
    container=$(buildah from scratch)
    mountpoint=$(buildah mount "$container")
    tar -C "$work/rootfs" -cf - \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
        --exclude='./tmp/*' --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' \
        --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
        --exclude='./usr/share/locale/*' --exclude='./usr/share/info/*' . |
        tar -C "$mountpoint" -xpf -
    buildah umount "$container" >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian bookworm minbase with python3 and python3-venv" \
        "$container"
    buildah commit --rm "$container" "$DEBIAN_BASE" >/dev/null
    rm -rf "$work"
    trap - EXIT
}

if [ -z "${PYTHON_IMAGE:-}" ]; then
    if buildah inspect --type image "$OFFICIAL" >/dev/null 2>&1; then
        PYTHON_IMAGE=$OFFICIAL
    elif buildah inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1; then
        PYTHON_IMAGE=$DEBIAN_BASE
    elif pulled=$(timeout 60 buildah pull --quiet "$OFFICIAL" 2>&1); then
        PYTHON_IMAGE=$OFFICIAL
    else
        say "cannot pull $OFFICIAL: $(echo "$pulled" | tail -n 1)"
        make_debian_base
        PYTHON_IMAGE=$DEBIAN_BASE
    fi
fi

say "buildah bud -t $TAG (base $PYTHON_IMAGE)"
# Docker format, so HEALTHCHECK is kept; --layers, so an unchanged lock reuses its layer;
# chroot isolation and the host network, which need no user namespaces or network setup.
# shellcheck disable=SC2046 # the secret flag is two words or none
exec buildah bud --format docker --layers --isolation chroot --network host --pull=false \
    --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" $(secret_args) -t "$TAG" .
