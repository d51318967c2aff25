#!/usr/bin/env bash
# build.sh: bin/kiln-$VERSION-offline.tar.gz, the offline bundle: the packages
# of bin/packages/, the example images (OCI archives: those IMAGES names, else
# bin/images/*.tar, when `make images-go` made them), install.sh, and SHA256SUMS over all of it. Run by
# `make bundle` from the repository root with VERSION (the package version).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${VERSION:?}"
name=kiln-$VERSION-offline
work=bin/bundlework
rm -rf "$work"
mkdir -p "$work/$name/packages" "$work/$name/images"
shopt -s nullglob
pkgs=(bin/packages/kiln_"$VERSION"-1_*.deb bin/packages/kiln-"$VERSION"-1.*.rpm)
[ ${#pkgs[@]} -gt 0 ] || { echo "bundle: no packages of version $VERSION in bin/packages (make packages)" >&2; exit 1; }
cp "${pkgs[@]}" "$work/$name/packages/"
# IMAGES (the Makefile's GO_IMAGES) names the archives to carry; by default every one built.
if [ -n "${IMAGES:-}" ]; then
	imgs=()
	for f in $IMAGES; do [ -f "$f" ] && imgs+=("$f"); done
else
	imgs=(bin/images/*.tar)
fi
if [ ${#imgs[@]} -eq 0 ]; then
	echo "bundle: warning: no example images in bin/images/ (make images): the bundle carries none" >&2
else
	cp "${imgs[@]}" "$work/$name/images/"
fi
install -m 0755 packaging/bundle/install.sh "$work/$name/install.sh"
(cd "$work/$name" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
rm -f bin/kiln-*-offline.tar.gz
out=bin/$name.tar.gz
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$out" "$name"
rm -rf "$work"
echo "bundle: $out ($(du -h "$out" | cut -f1)): ${#pkgs[@]} packages, ${#imgs[@]} images"
