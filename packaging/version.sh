#!/bin/sh
# version.sh GIT_DESCRIBE: prints the package version (Debian and RPM alike)
# for the Makefile's VERSION (git describe --tags --always --dirty):
#   v1.2.3                 -> 1.2.3
#   v1.2.3-rc1             -> 1.2.3~rc1           (sorts before 1.2.3)
#   v1.2.3-4-gabc1234      -> 1.2.3+4.gabc1234
#   abc1234-dirty (no tag) -> 0.0.0+git.N.abc1234.dirty  (N: commits on HEAD)
set -eu
v=${1:-dev}
dirty=
case "$v" in *-dirty) dirty=.dirty v=${v%-dirty} ;; esac
v=${v#v}
if printf '%s' "$v" | grep -Eq '^[0-9]+(\.[0-9]+)+'; then kind=tag; else kind=hash; fi
case "$kind" in
tag)
	extra=
	# -N-gHASH from git describe
	if printf '%s' "$v" | grep -Eq -- '-[0-9]+-g[0-9a-f]+$'; then
		extra=$(printf '%s' "$v" | sed -E 's/.*-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/')
		v=$(printf '%s' "$v" | sed -E 's/-[0-9]+-g[0-9a-f]+$//')
	fi
	# a pre-release suffix sorts before the release
	v=$(printf '%s' "$v" | sed -E 's/-/~/; s/[^A-Za-z0-9.+~]/./g')
	if [ -n "$dirty" ] && [ -z "$extra" ]; then extra=+0; fi
	printf '%s%s%s\n' "$v" "$extra" "$dirty"
	;;
hash)
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
	h=$(printf '%s' "$v" | sed -E 's/[^A-Za-z0-9]/./g')
	printf '0.0.0+git.%s.%s%s\n' "$n" "$h" "$dirty"
	;;
esac
