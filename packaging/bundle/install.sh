#!/bin/sh
# install.sh: installs kiln from this offline bundle, with no network at all.
#   1. verifies every file against SHA256SUMS
#   2. installs the package for this machine (dpkg -i, or rpm -U)
#   3. imports the example images (kiln images import; ctr if kiln lacks it)
#   4. runs kiln doctor
# Run as root from anywhere: sh kiln-VERSION-offline/install.sh
# Exit status: 0 installed (doctor's findings are printed), 1 failed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root (sudo sh $0)"

say "verifying checksums"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
sha256sum -c --quiet --strict SHA256SUMS || die "a file does not match SHA256SUMS: the bundle is damaged; copy it again"

case $(uname -m) in
x86_64 | amd64) deb=amd64 rpm=x86_64 ;;
aarch64 | arm64) deb=arm64 rpm=aarch64 ;;
*) die "no package for this machine's architecture $(uname -m) (amd64 and arm64 are in the bundle)" ;;
esac

if command -v dpkg >/dev/null 2>&1 && [ -d /var/lib/dpkg ]; then
	set -- packages/kiln_*_"$deb".deb
	[ -f "$1" ] || die "no .deb for $deb in packages/"
	say "installing $1 with dpkg"
	dpkg -i "$1"
elif command -v rpm >/dev/null 2>&1; then
	set -- packages/kiln-*."$rpm".rpm
	[ -f "$1" ] || die "no .rpm for $rpm in packages/"
	say "installing $1 with rpm"
	# Recommends (containerd, runc) are not enforced: rpm -U installs offline.
	rpm -U --replacepkgs "$1"
else
	die "neither dpkg nor rpm found: cannot install a package here"
fi

for bin in containerd runc; do
	command -v "$bin" >/dev/null 2>&1 ||
		say "warning: $bin is not installed; kiln needs it to train and serve (install it from your distribution's media)"
done

if [ -d /run/systemd/system ]; then
	systemctl start kilnd.service || say "warning: kilnd did not start: systemctl status kilnd"
fi

ns=kiln
if [ -r /etc/kiln/kiln.yaml ]; then
	v=$(sed -n '/^containerd:/,/^[^ #]/s/^  namespace: *\([^ #]*\).*/\1/p' /etc/kiln/kiln.yaml | head -n 1)
	[ -n "$v" ] && ns=$v
fi
for img in images/*.tar; do
	[ -f "$img" ] || continue
	if kiln images import --help >/dev/null 2>&1; then
		say "importing $img (kiln images import)"
		kiln images import "$img" || die "kiln images import $img failed"
	elif command -v ctr >/dev/null 2>&1; then
		say "importing $img (ctr -n $ns images import)"
		ctr -n "$ns" images import "$img" || die "ctr images import $img failed"
	else
		say "warning: cannot import $img: neither 'kiln images import' nor ctr is available"
	fi
done

say "kiln doctor:"
if kiln doctor; then
	say "kiln is installed and healthy"
else
	say "kiln is installed; kiln doctor found problems (above) to fix"
fi
say "next: the quick start \"On an installed site\" in /usr/share/doc/kiln/README.md"
