#!/usr/bin/env bash
# mkrootfs.sh DEST: debootstraps the Debian bookworm rootfs of the torch-digits
# example image (minbase + Debian's CPU-only PyTorch, torchvision, Pillow,
# NumPy; ~650 MB of packages), strips docs, man pages, locales and apt caches,
# and renames DEST.tmp to DEST only when it is whole, then writes DEST/.kiln-complete.
# The Makefile caches DEST under /var/cache/kiln keyed by a hash of this file
# (the package list and the preparation are both in it), so it is built once.
# TORCH_MIRROR overrides the mirror (default: the one this host's apt uses).
set -euo pipefail
dest=${1:?usage: mkrootfs.sh DEST}
suite=bookworm
packages="python3-torch python3-torchvision python3-pil python3-numpy"
mirror=${TORCH_MIRROR:-http://deb.debian.org/debian}

tmp=$dest.tmp
rm -rf "$tmp"
mkdir -p "$(dirname "$dest")"
log=$tmp.log
start=$(date +%s)
if ! debootstrap --variant=minbase "$suite" "$tmp" "$mirror" >"$log" 2>&1; then
	echo "mkrootfs: debootstrap $suite failed; last lines of $log:" >&2
	tail -n 20 "$log" >&2
	exit 1
fi
# apt inside the chroot resolves the ~190 dependencies more reliably than
# debootstrap's own resolver; recommends are left out on purpose.
cat >"$tmp/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
SRC
mount -t proc proc "$tmp/proc"
trap 'umount "$tmp/proc" 2>/dev/null || true' EXIT
if ! { chroot "$tmp" apt-get update &&
	DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y --no-install-recommends $packages; } >>"$log" 2>&1; then
	echo "mkrootfs: apt-get install $packages failed; last lines of $log:" >&2
	tail -n 20 "$log" >&2
	exit 1
fi
umount "$tmp/proc"
trap - EXIT
chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
# Shrink: nothing in the image reads docs, man pages, locales or apt state.
rm -rf "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
	"$tmp"/usr/share/locale/* "$tmp"/usr/share/lintian "$tmp"/var/lib/apt/lists/* \
	"$tmp"/var/cache/apt/* "$tmp"/var/cache/debconf/*-old "$tmp"/var/log/* "$tmp"/tmp/*
# The image runs as user 1000 with a read-only rootfs and /tmp on tmpfs.
echo 'kiln:x:1000:1000:kiln:/tmp:/usr/sbin/nologin' >>"$tmp/etc/passwd"
echo 'kiln:x:1000:' >>"$tmp/etc/group"
: >"$tmp/etc/machine-id"
echo "mkrootfs: built in $(($(date +%s) - start)) s" >>"$log"
mv "$log" "$tmp/.kiln-build.log"
date -u +%FT%TZ >"$tmp/.kiln-complete"
rm -rf "$dest"
mv "$tmp" "$dest"
