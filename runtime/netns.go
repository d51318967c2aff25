package runtime

import (
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// dialInNetns dials addr (tcp) from inside the network namespace of pid.
// A socket belongs to the namespace its creating thread was in, so the dial
// runs on a locked OS thread that setns'es into the task's namespace,
// creates and connects the socket, and setns'es back. A thread that cannot
// get back is never unlocked: the goroutine ends still locked and Go
// retires the thread rather than reuse it in the wrong namespace.
func dialInNetns(ctx context.Context, pid uint32, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		c, restored, err := dialLocked(ctx, pid, addr)
		if restored {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	res := <-ch
	return res.c, res.err
}

func dialLocked(ctx context.Context, pid uint32, addr string) (c net.Conn, restored bool, err error) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, fmt.Errorf("open own netns: %w", err)
	}
	defer func() { _ = orig.Close() }() // namespace handle, read-only
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, true, fmt.Errorf("open netns of task pid %d: %w", pid, err)
	}
	defer func() { _ = target.Close() }() // namespace handle, read-only
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter netns of task pid %d: %w", pid, err)
	}
	var d net.Dialer
	c, dialErr := d.DialContext(ctx, "tcp", addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if c != nil {
			_ = c.Close()
		}
		return nil, false, fmt.Errorf("return from netns of task pid %d: %w", pid, err)
	}
	if dialErr != nil {
		return nil, true, fmt.Errorf("dial %s in netns of task pid %d: %w", addr, pid, dialErr)
	}
	return c, true, nil
}
