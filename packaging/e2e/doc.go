// Package e2e tests kiln's packages under a real systemd.
//
// The static tests check the unit files (systemd-analyze verify prints nothing,
// the security exposure stays at most 3.0, the settings kilnd's job depends on
// are there), the sysusers.d and tmpfiles.d files, the maintainer scripts and
// the package version mapping. They need systemd-analyze and, for tmpfiles,
// root.
//
// TestSystemd boots a Debian rootfs with systemd, dbus, containerd and runc in
// systemd-nspawn (booted as PID 1, containerd working inside), installs the
// .deb that `make packages` wrote, and checks from outside, through nsenter
// and systemctl inside: socket activation, READY/STATUS, the watchdog, reload,
// containerd going away, the journal's structured fields, a pipeline training
// and serving across a restart, remove (kiln's containers and sockets go, the
// state stays) and purge, the offline bundle, then the README's installed-site
// quick start command by command (TestQuickstartReadme checks it statically:
// installed paths only, every file it reads made by an earlier step) and a
// remove and reinstall that serves the quick start's model again.
//
// The rootfs is debootstrapped once (mkrootfs.sh, ~40-60 s) and cached under
// /var/cache/kiln-test keyed by a hash of mkrootfs.sh; each run boots a
// throwaway copy (not --volatile=overlay: containerd's overlayfs snapshotter
// fails on an overlay /var/lib/containerd). Each run removes what it leaves:
// the copy, the nspawn cgroups under /sys/fs/cgroup/*/, /run/systemd/nspawn
// entries and mounts.
//
// Tests that need root, debootstrap or systemd-nspawn skip with the reason
// unless KILN_REQUIRE_REAL=1, which makes them fail instead. The whole run
// has a time budget (e2eBudget, warm cache) so CI stays inside its limit.
package e2e
