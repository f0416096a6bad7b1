#!/bin/sh
# Install what batchyard's Docker driver tests need: podman (serving the Docker Engine API), runc and a
# static busybox the tests turn into an image. Idempotent: installs only what is missing, and only as
# root on a Debian-like system; prints what it did. Exit 0 when podman is usable afterwards.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
conf="$here/podman/containers.conf"
packages="podman runc busybox-static"

missing=""
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
# The test image is /bin/busybox alone, so it must be the static build (busybox-static), not Debian's
# dynamically linked busybox.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
    missing="$missing busybox-static"
fi

if [ -z "$missing" ]; then
    echo "podman-setup: podman, runc and busybox-static already installed"
elif [ "$(id -u)" -ne 0 ]; then
    echo "podman-setup: missing:$missing; run as root (or: sudo apt-get install -y $packages)" >&2
    exit 1
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "podman-setup: missing:$missing; no apt-get here, install them with your package manager" >&2
    exit 1
else
    echo "podman-setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $packages >/dev/null
    echo "podman-setup: installed $packages"
fi

if CONTAINERS_CONF="$conf" podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null 2>&1; then
    echo "podman-setup: $(podman --version) works with CONTAINERS_CONF=$conf"
else
    echo "podman-setup: podman is installed but 'podman info' fails with CONTAINERS_CONF=$conf" >&2
    exit 1
fi
