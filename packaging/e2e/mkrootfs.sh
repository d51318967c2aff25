#!/usr/bin/env bash
# mkrootfs.sh DEST: debootstraps the Debian rootfs the systemd end-to-end test
# boots with systemd-nspawn (systemd, dbus, containerd, runc, procps; ~40-60 s, ~260 MB)
# and prepares it, into DEST.tmp, then renames it to DEST, so a DEST that
# exists is whole. The test caches DEST under /var/cache/kiln-test keyed by a
# hash of this file (the package list and the preparation are both in it).
# E2E_MIRROR overrides the mirror.
set -euo pipefail
dest=${1:?usage: mkrootfs.sh DEST}
suite=bookworm
packages=systemd,systemd-sysv,dbus,containerd,runc,procps
mirror=${E2E_MIRROR:-http://deb.debian.org/debian}

tmp=$dest.tmp
rm -rf "$tmp"
mkdir -p "$(dirname "$dest")"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
	echo "mkrootfs: debootstrap $suite failed; last lines of $tmp.log:" >&2
	tail -n 20 "$tmp.log" >&2
	exit 1
fi

# containerd inside nspawn: the v1 cgroup controllers are mounted read-only;
# remount them read-write before containerd starts (FIELD-NOTES).
mkdir -p "$tmp/etc/systemd/system/containerd.service.d"
cat >"$tmp/etc/systemd/system/containerd.service.d/nspawn-cgroups.conf" <<'UNIT'
[Service]
ExecStartPre=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mountpoint -q "$d" && mount -o remount,rw,bind "$d"; done; true'
UNIT
# Nothing in the test may reach the network or wait for it.
for u in apt-daily.timer apt-daily-upgrade.timer systemd-timesyncd.service e2scrub_all.timer fstrim.timer; do
	ln -sf /dev/null "$tmp/etc/systemd/system/$u"
done
echo kiln-e2e >"$tmp/etc/hostname"
: >"$tmp/etc/machine-id"
chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
rm -rf "$tmp/var/lib/apt/lists/"* "$tmp/var/cache/apt/"*.bin
rm -f "$tmp.log"
rm -rf "$dest"
mv "$tmp" "$dest"
