package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/runtime"
)

// containerd health, watched.
//
// The unit only Wants= containerd, so kilnd outlives it: containerd may be
// stopped, restarted or wedged (alive but not answering) under a running
// kilnd. Serving containers live on under their shims and endpoints keep
// answering through their sockets, which need no containerd; what stops is
// anything that asks containerd (starting a run or a server, stopping one).
// watchContainerd makes the outage visible: an event when containerd stops
// answering and one when it answers again, the systemd STATUS line, and
// `kiln status`, which names the outage's start. The runtime's gRPC client
// reconnects by itself (its own backoff); this loop only probes, each probe
// bounded by a timeout so a wedged containerd cannot block it.

// Probe cadence: every containerdProbeUp while containerd answers; while it
// does not, from containerdProbeMin doubling to containerdProbeMax, so a
// long outage costs little and a short one is seen to end within seconds.
const (
	containerdProbeUp      = 2 * time.Second
	containerdProbeMin     = time.Second
	containerdProbeMax     = 30 * time.Second
	containerdProbeTimeout = 3 * time.Second
)

// containerdOutage is an ongoing outage, as the watcher last saw it.
type containerdOutage struct {
	Since time.Time
	Err   string
	Next  time.Time // the next probe
}

func (o *containerdOutage) String() string {
	return fmt.Sprintf("unreachable since %s (%s): %s; retrying with backoff, next try in %s",
		o.Since.UTC().Format(time.RFC3339), time.Since(o.Since).Round(time.Second), o.Err,
		max(time.Until(o.Next), 0).Round(100*time.Millisecond))
}

func (d *Daemon) watchContainerd(ctx context.Context) {
	var out *containerdOutage
	delay := containerdProbeMin
	for {
		pctx, cancel := context.WithTimeout(ctx, containerdProbeTimeout)
		v, err := d.rt.Version(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := containerdProbeUp
		switch {
		case err != nil && out == nil:
			out = &containerdOutage{Since: time.Now(), Err: err.Error()}
			delay = containerdProbeMin
			d.log.Error("containerd unreachable; containers keep running, endpoints keep serving; retrying", "err", err)
			d.setStatus("containerd unreachable: " + err.Error())
			d.recordEvent(ctx, "containerd.unreachable", "", []string{d.rt.Address()}, map[string]string{"error": err.Error()})
		case err != nil:
			out.Err = err.Error()
		case out != nil:
			down := time.Since(out.Since).Round(time.Millisecond)
			d.log.Info("containerd reachable again", "version", v, "down_for", down)
			d.recordEvent(ctx, "containerd.reachable", "", []string{d.rt.Address()},
				map[string]string{"version": v, "down_for": down.String()})
			d.setStatus(d.readyStatus())
			out = nil
			d.ctrdOutage.Store(nil)
		}
		if out != nil {
			wait, delay = delay, min(2*delay, containerdProbeMax)
			o := *out
			o.Next = time.Now().Add(wait)
			d.ctrdOutage.Store(&o)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// recordServingExit makes a serving container's crash (and the restart
// that follows, or the supervisor giving up) an event: a crash-looping
// server is otherwise only a log line on a box nobody watches.
func (d *Daemon) recordServingExit(model string, ev runtime.Event) {
	pipe, _, _ := strings.Cut(model, "/")
	details := map[string]string{"container": ev.ID, "exit": ev.Exit.Reason(), "restarts": fmt.Sprint(ev.Restarts)}
	kind := "serve.exited"
	if ev.Restarting {
		details["restart_in"] = ev.Delay.String()
	}
	if ev.Err != nil {
		kind, details["error"] = "serve.failed", ev.Err.Error()
	}
	d.recordEvent(context.Background(), kind, pipe, []string{model}, details)
}
