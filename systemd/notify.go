// Package systemd owns kilnd's conversation with systemd: sd_notify (READY, STATUS, STOPPING,
// RELOADING), the service watchdog, socket activation, the fd store that keeps endpoint
// listeners open across `systemctl restart kilnd`, and choosing journald for logs.
//
// Everything is a no-op off systemd: without NOTIFY_SOCKET the Notifier sends nothing and
// returns nil, without LISTEN_FDS Listeners and Files return empty maps, and off journald the
// log handler writes text. The daemon therefore calls it unconditionally, with no "am I under
// systemd" branches of its own.
//
// Caveats:
//   - The environment is read, never cleared for NOTIFY_SOCKET and WATCHDOG_*: processes kilnd
//     execs inherit them. Containers started through containerd do not (they are not children).
//   - LISTEN_* is cleared on the first call of Listeners or Files, which share one read.
//   - systemd only accepts notifications from the main PID (NotifyAccess=main) and discards
//     FDSTORE=1 unless the unit sets FileDescriptorStoreMax= > 0.
//   - Linux only (it uses SOCK_CLOEXEC, SO_ACCEPTCONN, CLOCK_MONOTONIC); kilnd is Linux only.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends sd_notify datagrams to the socket named by NOTIFY_SOCKET when it was
// created. It holds no socket (each message uses a fresh one, as libsystemd does), so it is
// safe for concurrent use. The zero value and a nil *Notifier are no-op notifiers.
type Notifier struct {
	socket string // "": not under systemd (or a Type= other than notify)
}

// sendTimeout bounds one notification when systemd does not drain its socket.
const sendTimeout = 2 * time.Second

// NewNotifier reads NOTIFY_SOCKET once. It does not unset it (see the package caveats).
// An abstract socket ("@name") works: x/sys/unix maps a leading '@' to the abstract namespace.
func NewNotifier() *Notifier {
	return &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
}

// Enabled reports whether notifications go anywhere; callers need not check it first.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Ready sends READY=1. Send it only once the API serves and state is restored, and again
// after each reload (Reloading), or Type=notify-reload units stay "reloading".
func (n *Notifier) Ready() error { return n.send("READY=1") }

// Status sends STATUS=msg, shown by `systemctl status`. The protocol is line based, so
// newlines in msg become spaces.
func (n *Notifier) Status(msg string) error {
	return n.send("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg))
}

// Stopping sends STOPPING=1; send it as soon as SIGTERM arrives, before the slow shutdown.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// Reloading sends RELOADING=1 with MONOTONIC_USEC, which Type=notify-reload requires to
// tell this reload from an earlier one (and other types ignore). Follow it with Ready.
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sd_notify RELOADING: read CLOCK_MONOTONIC: %w", err)
	}
	return n.send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10))
}

// Watchdog sends one WATCHDOG=1 ping. Prefer RunWatchdog, which ties pings to health.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// StoreFDs hands files to systemd's fd store under name (FDSTORE=1, FDNAME=name, the fds as
// SCM_RIGHTS). After a restart they come back through Listeners (listening sockets) or Files
// (anything else) under the same name. systemd keeps its own duplicates: the caller still
// owns and may close files. The unit needs FileDescriptorStoreMax= (else systemd drops them),
// and systemd refuses a name longer than 255 bytes, with ':' or control characters.
func (n *Notifier) StoreFDs(name string, files ...*os.File) error {
	if len(name) > 255 || strings.ContainsFunc(name, func(r rune) bool { return r == ':' || r < ' ' || r == 0x7f }) {
		return fmt.Errorf("sd_notify FDSTORE: invalid fd name %q", name)
	}
	if len(files) == 0 {
		return errors.New("sd_notify FDSTORE: no files")
	}
	state := "FDSTORE=1"
	if name != "" {
		state += "\nFDNAME=" + name
	}
	return n.send(state, files...)
}

// RemoveFDs drops every fd stored under name (FDSTOREREMOVE=1), e.g. when the endpoint a
// stored listener served is deleted; otherwise the store hands it back on every restart.
// Storing the same fd twice is harmless (systemd keeps one), so there is no need to remove
// before re-storing after a restart.
func (n *Notifier) RemoveFDs(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, ":\n") {
		return fmt.Errorf("sd_notify FDSTOREREMOVE: invalid fd name %q", name)
	}
	return n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
}

func (n *Notifier) send(state string, files ...*os.File) error {
	if !n.Enabled() {
		return nil
	}
	// A plain socket, not net.DialUnix: Go refuses ancillary data on connected datagram conns.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }() // datagram socket: Sendmsg's result is what counts
	// Bound the wait if systemd's queue is full, instead of wedging the caller.
	tv := unix.NsecToTimeval(int64(sendTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("sd_notify socket: %w", err)
	}
	err = withFDs(files, nil, func(fds []int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		return unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: n.socket}, unix.MSG_NOSIGNAL)
	})
	if err != nil {
		return fmt.Errorf("sd_notify %s to %s: %w", strings.SplitN(state, "\n", 2)[0], n.socket, err)
	}
	return nil
}

// withFDs calls fn with the raw fds of files, holding each one open meanwhile. It goes through
// SyscallConn rather than (*os.File).Fd, which would switch a shared socket to blocking mode.
func withFDs(files []*os.File, fds []int, fn func([]int) error) error {
	if len(files) == 0 {
		return fn(fds)
	}
	rc, err := files[0].SyscallConn()
	if err != nil {
		return fmt.Errorf("fd of %s: %w", files[0].Name(), err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = withFDs(files[1:], append(fds, int(fd)), fn) }); err != nil {
		return fmt.Errorf("fd of %s: %w", files[0].Name(), err)
	}
	return ferr
}

// WatchdogInterval returns WatchdogSec= from WATCHDOG_USEC, and false when the watchdog is
// off, WATCHDOG_PID names another process (a child that inherited the env), or the values
// do not parse. The clock starts when systemd starts kilnd, not at READY=1.
func WatchdogInterval() (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	return d, err == nil && d > 0
}

// RunWatchdog sends WATCHDOG=1 every interval/2 until ctx is done, but only while healthy()
// returns nil: a wedged daemon must stop petting so systemd kills and restarts it. A healthy
// that blocks therefore also stops the pings, by design. Skipped and failed pings are logged.
// It blocks until ctx is done even when there is nothing to do (no watchdog, interval <= 0),
// so it can run beside the daemon's other loops. healthy and log may be nil.
func (n *Notifier) RunWatchdog(ctx context.Context, interval time.Duration, healthy func() error, log *slog.Logger) {
	if !n.Enabled() || interval <= 0 {
		<-ctx.Done()
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if healthy != nil {
			if err := healthy(); err != nil {
				log.Warn("skipping watchdog ping: unhealthy", "interval", interval, "err", err)
				continue
			}
		}
		if err := n.Watchdog(); err != nil {
			log.Warn("watchdog ping failed", "err", err)
		}
	}
}
