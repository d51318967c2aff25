package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// passed is the one read of LISTEN_FDS/LISTEN_FDNAMES: activation clears the environment,
// so a second read would find nothing.
var passed struct {
	once      sync.Once
	listeners map[string][]net.Listener
	files     map[string][]*os.File
	err       error
}

// Listeners returns the socket-activated listeners (kilnd.socket's FileDescriptorName=, or
// listening sockets kept in the fd store under their FDNAME), keyed by name. Unnamed fds are
// keyed "LISTEN_FD_<n>". The first call of Listeners or Files reads and clears LISTEN_*; later
// calls return the same map, which callers must not modify. Empty map off systemd. A listener
// that is not taken must still be closed by the caller, or systemd sees it as in use.
func Listeners() (map[string][]net.Listener, error) {
	passed.once.Do(readPassed)
	return passed.listeners, passed.err
}

// Files returns the passed fds that are not listening sockets (fd-store entries such as
// state files, memfds, connected or datagram sockets), keyed by name; listening sockets are
// in Listeners only. It shares the one read of the environment with Listeners.
func Files() (map[string][]*os.File, error) {
	passed.once.Do(readPassed)
	return passed.files, passed.err
}

func readPassed() {
	passed.listeners = map[string][]net.Listener{}
	passed.files = map[string][]*os.File{}
	var errs []error
	for _, f := range activation.Files(true) {
		name := f.Name()
		if listening(f) {
			l, err := net.FileListener(f) // dups the fd
			if err == nil {
				_ = f.Close() // the listener holds its own dup of the fd
				passed.listeners[name] = append(passed.listeners[name], l)
				continue
			}
			errs = append(errs, fmt.Errorf("passed fd %q: listener: %w", name, err))
		}
		passed.files[name] = append(passed.files[name], f)
	}
	passed.err = errors.Join(errs...)
}

// listening reports whether f is a socket in listening state (SO_ACCEPTCONN); any error
// (ENOTSOCK for regular files) means no.
func listening(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN) }); err != nil {
		return false
	}
	return gerr == nil && v == 1
}
