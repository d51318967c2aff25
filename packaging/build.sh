#!/usr/bin/env bash
# build.sh: kiln's .deb and .rpm for each of ARCHES, written to bin/packages/,
# then lintian on the amd64 .deb (any error fails the build). Run by
# `make packages` from the repository root with VERSION, COMMIT, BUILD_DATE,
# GO and NFPM set; ARCHES defaults to "amd64 arm64".
#
# kilnd needs cgo (go-nvml), so arm64 is cross-built with
# aarch64-linux-gnu-gcc (make deps installs it). The binaries link only libc.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:?}" "${COMMIT:?}" "${BUILD_DATE:?}" "${NFPM:?}"
GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
export MAINTAINER=${MAINTAINER:-kiln maintainers <maintainers@kiln-edge.org>}
export PKG_VERSION
PKG_VERSION=$(packaging/version.sh "$VERSION")
out=bin/packages
work=bin/pkgwork
export PKG_GEN=$work/gen
mkdir -p "$out" "$PKG_GEN"
rm -f "$out"/kiln_*.deb "$out"/kiln-*.rpm

# Debian wants a changelog with distribution and urgency (nfpm's has neither).
sed -e "s|@VERSION@|$PKG_VERSION-1|" -e "s|@GITVERSION@|$VERSION|" -e "s|@COMMIT@|$COMMIT|" \
	-e "s|@MAINTAINER@|$MAINTAINER|" -e "s|@DATE@|$(date -R -d "$BUILD_DATE" 2>/dev/null || date -R)|" \
	packaging/deb/changelog.in | gzip -9n >"$PKG_GEN/changelog.Debian.gz"
# The man pages are generated from the CLI's code (go generate ./cmd/kiln;
# a test keeps the committed ones current).
for page in packaging/man/*.[18]; do
	gzip -9n <"$page" >"$PKG_GEN/$(basename "$page").gz"
done
# Shell completions come from the CLI itself (kiln completion SHELL), built
# for this host: the scripts are the same for every architecture.
$GO build -o "$work/kiln-host" ./cmd/kiln
for sh in bash zsh fish; do
	"$work/kiln-host" completion "$sh" >"$PKG_GEN/kiln.$sh"
	[ -s "$PKG_GEN/kiln.$sh" ] || { echo "packages: kiln completion $sh wrote nothing" >&2; exit 1; }
done

# main.pkgVersion is what dpkg and rpm show (kiln version prints it beside git's).
ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.buildDate=$BUILD_DATE -X main.pkgVersion=$PKG_VERSION-1"
for arch in $ARCHES; do
	export ARCH=$arch PKG_BIN=$work/$arch
	cc=gcc
	if [ "$arch" != "$($GO env GOHOSTARCH)" ]; then
		case $arch in
		arm64) cc=aarch64-linux-gnu-gcc ;;
		amd64) cc=x86_64-linux-gnu-gcc ;;
		*) echo "packages: no cross compiler known for $arch" >&2; exit 1 ;;
		esac
		command -v "$cc" >/dev/null || { echo "packages: $cc not found; run 'make deps' (as root)" >&2; exit 1; }
	fi
	CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc $GO build -trimpath -buildmode=pie \
		-ldflags "$ldflags" -o "$PKG_BIN/" ./cmd/kilnd ./cmd/kiln
	for fmt in deb rpm; do
		if ! "$NFPM" package --config packaging/nfpm.yaml --packager "$fmt" --target "$out/" >"$work/nfpm.log" 2>&1; then
			echo "packages: nfpm $fmt $arch failed:" >&2
			cat "$work/nfpm.log" >&2
			exit 1
		fi
	done
done
ls -1 "$out"/kiln_*.deb "$out"/kiln-*.rpm

if [[ " $ARCHES " == *" amd64 "* ]]; then
	if ! command -v lintian >/dev/null; then
		echo "packages: lintian not found; run 'make deps' (as root)" >&2
		exit 1
	fi
	deb=$(ls "$out"/kiln_*_amd64.deb)
	# lintian exits non-zero on errors; warnings are printed.
	lintian --fail-on error --suppress-tags-from-file /dev/null "$deb"
	echo "packages: lintian found no errors in $deb"
fi
