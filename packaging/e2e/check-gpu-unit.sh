#!/usr/bin/env bash
# check-gpu-unit.sh BINDIR: on a machine with an NVIDIA GPU, checks that
# kilnd.service's sandbox still lets NVML reach the GPUs.
#   1. every /dev/nvidia* character device's major is named nvidia* in
#      /proc/devices, so DeviceAllow=char-nvidia* covers it;
#   2. when systemd is PID 1: installs the unit (ExecStart pointed at
#      BINDIR/kilnd copied to /usr/local/bin) as a runtime unit, starts it
#      through kilnd.socket with `kiln gpu`, and shows what NVML saw; then
#      stops and removes it again.
# BINDIR holds kilnd and kiln (make packages leaves them in bin/pkgwork/amd64).
set -uo pipefail
bindir=${1:?usage: check-gpu-unit.sh BINDIR}
here=$(cd "$(dirname "$0")" && pwd)
rc=0

echo "== NVIDIA devices and their /proc/devices names"
found=0
for d in /dev/nvidia* /dev/nvidia-caps/*; do
	[ -c "$d" ] || continue
	found=1
	major=$((16#$(stat -c %t "$d")))
	name=$(awk -v m="$major" '$1 == m && !seen[$2]++ {print $2}' /proc/devices | paste -sd, -)
	case ",$name," in
	*,nvidia*) echo "ok    $d major $major ($name)" ;;
	*) echo "FAIL  $d major $major ($name) is not matched by DeviceAllow=char-nvidia*"; rc=1 ;;
	esac
done
[ $found = 1 ] || { echo "no /dev/nvidia* character devices here"; exit 1; }

if [ "$(ps -p 1 -o comm=)" != systemd ]; then
	echo "== PID 1 is $(ps -p 1 -o comm=), not systemd: the unit itself is not started here"
	exit $rc
fi
echo "== kilnd.service under systemd $(systemctl --version | head -n 1)"
install -m 0755 "$bindir/kilnd" "$bindir/kiln" /usr/local/bin/
sed 's|^ExecStart=/usr/bin/kilnd|ExecStart=/usr/local/bin/kilnd|' "$here/../systemd/kilnd.service" >/run/systemd/system/kilnd.service
cp "$here/../systemd/kilnd.socket" /run/systemd/system/kilnd.socket
getent group kiln >/dev/null || groupadd --system kiln
getent group kiln-admin >/dev/null || groupadd --system kiln-admin
systemctl daemon-reload
systemctl start kilnd.socket
if ! timeout 60 /usr/local/bin/kiln gpu; then rc=1; fi
timeout 30 /usr/local/bin/kiln doctor | grep -E 'nvml|containerd'
systemctl show kilnd -p ActiveState,StatusText,DevicePolicy,DeviceAllow,PrivateDevices
journalctl -u kilnd --no-pager -n 15 -o cat
if ! /usr/local/bin/kiln gpu -o json | grep -q '"uuid"'; then
	echo "FAIL  NVML saw no GPU from inside kilnd.service"
	rc=1
fi
systemctl stop kilnd.service kilnd.socket
rm -f /run/systemd/system/kilnd.service /run/systemd/system/kilnd.socket /usr/local/bin/kilnd /usr/local/bin/kiln
systemctl daemon-reload
rm -rf /var/lib/kiln /run/kiln
exit $rc
