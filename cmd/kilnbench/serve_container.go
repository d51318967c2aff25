package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/examples/tabular/model"
	"github.com/kiln-edge/kiln/runtime"
)

// svContainer is the serve group's backend as kilnd deploys it: the example
// tabular server image, started through package runtime with the spec
// kilnd's adapter builds (daemon/containers.go: its own network namespace,
// a workload uid, the model read-only, listening on $KILN_SOCKET in a
// socket folder only that uid and root can enter), dialed through
// Task.DialContext as the endpoint's route does.
type svContainer struct {
	rt    *runtime.Runtime
	task  *runtime.Task
	model string
	sock  string // the serving socket on the host
	body  string // one CSV row of the model's features
}

func (c *svContainer) Model() string { return c.model }

func (c *svContainer) DialContext(ctx context.Context) (net.Conn, error) {
	return c.task.DialContext(ctx)
}

func (c *svContainer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.task != nil {
		_, _ = c.task.Stop(ctx, time.Second) // the bench is over; Delete reports nothing we could act on either
		_ = c.task.Delete(ctx)
	}
	_ = c.rt.Close() // the containerd client
}

// svStartContainer imports bin/images/tabular-server.tar into containerd at
// addr, trains a model on the example data into dir, and starts the
// serving container; it returns once /ping answers.
func svStartContainer(ctx context.Context, opt Options, addr, dir string) (*svContainer, error) {
	archive := filepath.Join(opt.Bin, "images", "tabular-server.tar")
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("%v (make images builds it)", err)
	}
	defer func() { _ = f.Close() }() // opened read-only
	data, err := os.Open("examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return nil, fmt.Errorf("run from the repository root: %v", err)
	}
	defer func() { _ = data.Close() }() // opened read-only
	tab, err := model.ReadTable(data, "diagnosis")
	if err != nil {
		return nil, err
	}
	m, err := model.Train(tab, model.Options{Epochs: 50})
	if err != nil {
		return nil, err
	}
	modelDir := filepath.Join(dir, "model")
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return nil, err
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(modelDir, "model.json"), mj, 0o644); err != nil {
		return nil, err
	}
	row := make([]string, len(tab.X[0]))
	for i, x := range tab.X[0] {
		row[i] = fmt.Sprint(x)
	}

	rt, err := runtime.New(addr, "kiln-bench-serve", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	c := &svContainer{rt: rt, model: "bench/m1", body: strings.Join(row, ",") + "\n"}
	if _, err := rt.Import(ctx, f, nil); err != nil {
		c.stop()
		return nil, fmt.Errorf("import %s: %w", archive, err)
	}
	id := fmt.Sprintf("kb-serve-%d", os.Getpid())
	spec := runtime.ServeSpec{
		Common: runtime.Common{ID: id, Image: images.ServerRef, Pipeline: "bench",
			LogFile:   filepath.Join(dir, "logs", id+".log"),
			Resources: runtime.Resources{MemoryBytes: 256 << 20}},
		ModelDir: modelDir, ModelID: c.model, SocketDir: filepath.Join(dir, "s", id),
	}
	if err := os.MkdirAll(spec.SocketDir, 0o755); err != nil {
		c.stop()
		return nil, err
	}
	if c.task, err = rt.Serve(ctx, spec); err != nil {
		c.stop()
		return nil, fmt.Errorf("start the serving container: %w", err)
	}
	c.sock = spec.SocketPath()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.task.WaitReady(rctx, "/ping"); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// svCPU is the CPU time (user + system) the processes pids and their
// children have used, from /proc (clock ticks of 10 ms: over a round of
// thousands of requests that is under a microsecond per request).
func svCPU(pids ...int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		all := []string{strconv.Itoa(pid)}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			all = append(all, strings.Fields(string(b))...)
		}
		for _, p := range all {
			b, err := os.ReadFile("/proc/" + p + "/stat")
			if err != nil {
				continue // gone: it used nothing more
			}
			// Fields after the command (which may hold spaces): state is
			// field 3, utime 14 and stime 15.
			_, rest, _ := strings.Cut(string(b), ") ")
			f := strings.Fields(rest)
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				ticks += u + s
			}
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// svSelfCPU is this process's CPU time: the kiln endpoint runs in it.
func svSelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
