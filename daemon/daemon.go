// Package daemon is kilnd's composition root: New builds every part (store,
// GPU inventory, containerd runtime, pipeline set, local API) and Run drives
// the lifecycle
//
//	restore (open store, reconcile) -> serve the API -> READY=1 -> wait
//	  -> STOPPING=1 -> drain the API -> close parts
//
// Nothing else constructs those parts. Shutting kilnd down never stops a
// container it started: the runtime is only disconnected, and the next kilnd
// re-adopts what runs (Nomad's "agent exiting" versus "stop this task").
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/monitor"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/gpu"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/systemd"
)

// Options are what the main hands the daemon.
type Options struct {
	Config *config.Daemon
	Build  api.BuildInfo
	Log    *slog.Logger
	// GPU replaces the system's NVML inventory; tests pass one built on
	// go-nvml's mocks. Nil means gpu.Open.
	GPU *gpu.Manager
}

// Daemon is one running kilnd.
type Daemon struct {
	cfg     *config.Daemon
	build   api.BuildInfo
	log     *slog.Logger
	started time.Time
	notify  *systemd.Notifier

	store   *storage.Store
	gpus    *gpu.Manager
	leaser  *gpuLeaser
	rt      *runtime.Runtime
	ctrs    *containers
	eps     *endpoints
	pipes   *pipeline.Manager
	ingest  *ingest.Manager
	mon     *monitor.Monitor
	metrics *metrics
	journal *journalFollower

	state     atomic.Value // string: starting | ready | reloading | stopping
	pipelines atomic.Pointer[pipelineSet]

	reloadMu   sync.Mutex // one reload at a time
	lastReload atomic.Pointer[api.ReloadResult]
	ctrdOutage atomic.Pointer[containerdOutage] // nil while containerd answers
}

// Daemon states reported by `kiln status`.
const (
	stateStarting  = "starting"
	stateReady     = "ready"
	stateReloading = "reloading"
	stateStopping  = "stopping"
)

// New builds kilnd's parts in dependency order. It fails, with one line
// naming the path and the cause, when the state is unusable (a directory not
// writable, another kilnd holding the store); it never overwrites or deletes
// anything on the way.
func New(opt Options) (*Daemon, error) {
	cfg := opt.Config
	if err := cfg.Paths.Check(); err != nil {
		return nil, err
	}
	if err := crashpoint.Arm(os.Getenv(crashpoint.EnvVar)); err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:     cfg,
		build:   opt.Build,
		log:     opt.Log,
		started: time.Now(),
		notify:  systemd.NewNotifier(),
	}
	d.state.Store(stateStarting)
	d.setStatus("opening state in " + cfg.Paths.StateDir)

	if err := makeDirs(cfg.Paths); err != nil {
		return nil, err
	}
	store, err := storage.Open(cfg.Paths.StateDir, storage.Options{
		LockTimeout: cfg.StoreLockTimeout.Duration,
		Logger:      d.log.With("part", "storage"),
	})
	if err != nil {
		return nil, err
	}
	d.store = store
	// Every event from here on is also a journal line (journal.go).
	seq, _ := store.Head()
	d.journal = &journalFollower{d: d, next: seq + 1}

	rt, err := runtime.New(cfg.Containerd.Address, cfg.Containerd.Namespace, d.log.With("part", "runtime"),
		runtime.WithCDIDirs(cfg.GPU.CDIDirs...), runtime.WithKilnVersion(opt.Build.Version))
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	d.rt = rt
	// A local account inside the workload id block could act as a
	// container (signal it, read its model): say so at every start.
	if clash, err := runtime.CheckIDRange(runtime.DefaultIDRange, "/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid"); err != nil || len(clash) > 0 {
		d.log.Warn("local accounts overlap the workload id block; containers are not isolated from them",
			"block", runtime.DefaultIDRange.String(), "overlaps", clash, "err", err)
	}
	d.gpus = opt.GPU
	if d.gpus == nil {
		d.gpus = gpu.Open(d.log.With("part", "gpu"), gpu.Options{
			SampleInterval: cfg.GPU.SampleInterval.Duration,
			CDIDirs:        cfg.GPU.CDIDirs,
		})
	}
	d.metrics = newMetrics(d)
	d.ctrs = &containers{rt: rt, sockets: filepath.Join(cfg.Paths.RunDir, "models"), log: d.log.With("part", "runtime")}
	d.eps = newEndpoints(cfg.Paths, cfg.Groups.Read, cfg.Groups.Admin, int64(cfg.Disk.MinFree), d.notify, d.log.With("part", "serve"))
	d.leaser = &gpuLeaser{gpus: d.gpus, store: store}
	d.pipes = pipeline.New(pipeline.Deps{
		Store:     store,
		Runtime:   d.ctrs,
		Endpoints: d.eps,
		GPUs:      d.leaser,
		Paths:     cfg.Paths,
		Log:       d.log.With("part", "pipeline"),
		Version:   opt.Build.Version,
	})

	d.ingest, err = ingest.New(ingest.Options{
		Store: store, DropDir: cfg.Paths.DropDir, FeedbackDir: cfg.Paths.FeedbackDir,
		QuarantineDir: cfg.Paths.QuarantineDir, MinFree: int64(cfg.Disk.MinFree),
		Log: d.log.With("part", "ingest"), Status: d.setStatus,
	})
	if err != nil {
		_ = rt.Close()
		_ = store.Close()
		return nil, err
	}
	d.mon = d.newMonitor()

	// A bad pipeline folder at start must not keep kilnd down: it starts with
	// no pipelines, reports why, and the next reload tries again.
	d.pipelines.Store(&pipelineSet{})
	if _, err := d.reload(context.Background(), "start"); err != nil {
		d.log.Error("pipelines not loaded; fix the spec and run `kiln pipelines reload`", "err", err)
	}
	return d, nil
}

// makeDirs creates kiln's folders (never changing an existing one) and proves
// the state dir writable, so a read-only or foreign-owned root fails at start
// with its path rather than at the first write.
func makeDirs(p config.Paths) error {
	for _, dir := range []string{p.ConfigDir, p.PipelinesDir, p.StateDir, p.DropDir, p.FeedbackDir,
		p.QuarantineDir, p.RunsDir, p.ModelsDir, p.RunDir, p.ServeDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	// Run workspaces and model folders are kilnd's and each container's
	// alone: containers reach theirs through bind mounts, which need no
	// path above them, so these parents are root's (also on an upgrade
	// from a kiln that made them 0755) and no local account walks in.
	for _, dir := range []string{p.RunsDir, p.ModelsDir} {
		if st, err := os.Stat(dir); err == nil && st.Mode().Perm() == 0o700 {
			continue // a read-only state dir must still start (and say so)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("make %s private: %w", dir, err)
		}
	}
	return probeWritable(p.StateDir)
}

func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".kiln-probe-*")
	if err != nil {
		return fmt.Errorf("state dir %s is not writable: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// Run serves until ctx ends, then drains. The caller cancels ctx on the first
// SIGTERM/SIGINT; a second one, with the default disposition restored by the
// caller, kills the process, and a drain longer than shutdown_timeout is cut.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.closeParts()
	// The journal follows the event chain until the very end: what the
	// drain records is flushed just before the store closes.
	jctx, stopJournal := context.WithCancel(context.WithoutCancel(ctx))
	journalDone := d.journal.followEvents(jctx)
	defer func() { stopJournal(); <-journalDone; d.journal.flush() }()
	// systemd's watchdog clock runs from exec, not from READY: pet it from
	// the start so a slow restore is not mistaken for a hang.
	if interval, ok := systemd.WatchdogInterval(); ok {
		go d.notify.RunWatchdog(ctx, interval, d.healthy, d.log)
	}

	d.setStatus("reconciling state")
	rep, err := d.store.Reconcile(ctx)
	if err != nil {
		return fmt.Errorf("reconcile state in %s: %w", d.cfg.Paths.StateDir, err)
	}
	if len(rep.MissingBlobs) > 0 {
		d.log.Warn("blobs missing for records; see `kiln doctor`", "count", len(rep.MissingBlobs))
	}

	ln, err := d.apiListener()
	if err != nil {
		return err
	}
	handler, err := d.handler()
	if err != nil {
		_ = ln.Close()
		return err
	}
	// Streams (events -f) hang off this context so the drain can end them.
	// WithoutCancel: the drain below decides when requests end, not the
	// signal that ends ctx.
	serveCtx, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStreams()
	srv := &http.Server{
		Handler:           handler,
		ConnContext:       localapi.ConnContext,
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		ReadHeaderTimeout: 10 * time.Second,
		// The socket is 0666 (authorization comes after the connection), so
		// an idle keep-alive connection must not be held forever by anyone.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()

	var metricsSrv *http.Server
	if addr := d.cfg.Metrics.Listen; addr != "" {
		if metricsSrv, err = d.serveMetricsTCP(addr, serveErr); err != nil {
			_ = srv.Close()
			return err
		}
	}

	if err := d.gpus.Start(ctx); err != nil {
		d.log.Warn("gpu monitoring not started", "err", err)
	}
	go d.consumeGPUHealth(ctx)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go d.watchPipelines(ctx)
	go d.runGC(ctx)
	// Ingest stops before the store closes (the deferred closeParts runs last).
	ingestCtx, stopIngest := context.WithCancel(ctx)
	ingestDone := make(chan struct{})
	go func() {
		defer close(ingestDone)
		if err := d.ingest.Run(ingestCtx); err != nil {
			d.log.Error("ingest stopped; drop folders are not watched", "err", err)
		}
	}()
	defer func() { stopIngest(); <-ingestDone }()
	// Pipelines restore in the background: READY does not wait for model
	// containers, but the endpoints answer as soon as each live model does.
	d.ctrs.life = ctx
	d.ctrs.onEvent = d.recordServingExit
	d.pipes.Start(ctx, d.pipelines.Load().specs)
	// The monitor scores feedback through the pipelines' models: it asks
	// each controller, which answers once its pipeline is restored.
	d.mon.Start(ctx, d.pipelines.Load().specs)
	go d.sweepContainers(ctx)
	go d.watchContainerd(ctx)

	if _, err := d.store.Append(ctx, storage.Event{Actor: actorKilnd, Kind: "kilnd.started",
		Details: map[string]string{"version": d.build.Version, "pid": fmt.Sprint(os.Getpid())}}); err != nil {
		d.log.Error("record start event", "err", err)
	}
	seq, head := d.store.Head()
	d.state.Store(stateReady)
	if err := d.notify.Ready(); err != nil {
		d.log.Warn("sd_notify READY", "err", err)
	}
	d.eps.markReady() // prediction log index rebuilds start now
	d.setStatus(d.currentStatus())
	d.log.Info("kilnd ready", "socket", ln.Addr().String(), "events", seq, "chain_head", head,
		"pipelines", len(d.pipelines.Load().specs), "gpu", d.gpus.Snapshot().Summary())

	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-hup:
			// A rejection is journaled by its event, with every cause.
			_, _ = d.reload(ctx, "sighup")
		case err := <-serveErr:
			return fmt.Errorf("api server: %w", err)
		}
	}

	d.state.Store(stateStopping)
	_ = d.notify.Stopping()
	d.setStatus("stopping: draining API requests")
	d.log.Info("kilnd stopping; containers keep running", "timeout", d.cfg.ShutdownTimeout.Duration)
	stopStreams()
	// ctx is cancelled by now: the drain gets its own deadline.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownTimeout.Duration)
	defer cancel()
	d.pipes.Wait()
	d.mon.Wait()
	if eerr := d.eps.shutdownAll(drainCtx); eerr != nil {
		d.log.Warn("drain pipeline endpoints", "err", eerr)
	}
	err = srv.Shutdown(drainCtx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(drainCtx)
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("drain cut after %s: %w", d.cfg.ShutdownTimeout.Duration, err)
	}
	return nil
}

// apiListener takes the socket systemd handed over (kilnd.socket) when there
// is one, else creates it.
func (d *Daemon) apiListener() (net.Listener, error) {
	ls, err := systemd.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	if l := ls["api"]; len(l) > 0 {
		d.log.Info("using socket-activated API listener", "addr", l[0].Addr().String())
		return l[0], nil
	}
	return localapi.Listen(d.cfg.Paths.APISocket, 0o666)
}

func (d *Daemon) serveMetricsTCP(addr string, serveErr chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s (kiln.yaml metrics.listen): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.PathMetrics, d.metrics.handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	return srv, nil
}

// healthy gates the watchdog: a kilnd whose store no longer answers stops
// petting it, so systemd restarts it.
func (d *Daemon) healthy() error {
	_, _, err := d.store.DiskFree()
	return err
}

// consumeGPUHealth turns GPU faults into cordons: an unhealthy GPU is kept
// from placement until a person uncordons it, survives restarts, and the
// run holding it fails with the reason.
func (d *Daemon) consumeGPUHealth(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.gpus.Health():
			if ev.Healthy {
				continue
			}
			d.log.Error("gpu unhealthy; cordoning it", "gpu_uuid", ev.UUID, "gpu", ev.Index, "reason", ev.Reason)
			if err := d.cordonFaultyGPU(ctx, ev); err != nil {
				d.log.Error("cordon unhealthy gpu", "gpu_uuid", ev.UUID, "err", err)
			}
		}
	}
}

func (d *Daemon) closeParts() {
	if err := d.gpus.Close(); err != nil {
		d.log.Warn("close gpu", "err", err)
	}
	if err := d.rt.Close(); err != nil {
		d.log.Warn("close containerd client", "err", err)
	}
	if err := d.store.Close(); err != nil {
		d.log.Error("close store", "err", err)
	}
}

// actorKilnd is the actor of events kilnd raises on its own.
const actorKilnd = "kilnd"

func (d *Daemon) setStatus(msg string) {
	if err := d.notify.Status(msg); err != nil {
		d.log.Debug("sd_notify STATUS", "err", err)
	}
}

func (d *Daemon) readyStatus() string {
	return fmt.Sprintf("ready: %s, %s", plural(len(d.pipelines.Load().specs), "pipeline"), d.gpus.Snapshot().Summary())
}
