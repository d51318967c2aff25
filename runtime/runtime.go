// Package runtime is kiln's only door to containerd. It is told what to run
// and what should exist; it never reads kiln's store, and it imports none of
// kiln's other packages (storage, gpu, daemon): it is a leaf.
//
// Everything kiln creates lives in its own containerd namespace (default
// "kiln"), so kiln never sees or touches a machine's other containers, and
// tests use a namespace of their own.
//
// The connection is lazy: containerd may be down when kilnd starts (the unit
// only Wants= it), and every call reconnects through gRPC's backoff, so kilnd
// stays up, reports containerd as unreachable, and recovers on its own.
//
// # API
//
// Images (air-gapped: archives only, never a registry):
//
//	Import(ctx, r, progress) ([]Image, error)  OCI or `docker save` archive; unpacked; pinned by digest
//	List(ctx) ([]Image, error)                 every tag and pin, with its manifest digest
//	Resolve(ctx, ref) (string, error)          tag or "sha256:..." -> digest; ErrImageNotFound names it
//	GC(ctx, keep) ([]Image, error)             removes every image whose digest is not in keep
//
// Tasks: Train(ctx, TrainSpec) and Serve(ctx, ServeSpec) create a labelled
// container from an image digest and start its task; both return a *Task.
// A Task is a handle: Wait (exit code, OOM, timeout, cancel, the trainer's
// /opt/ml/output/failure), Stop (SIGTERM, SIGKILL after a grace period),
// Delete, Metrics, and for serving DialContext, WaitReady and Supervise
// (restart with backoff; each exit is reported to a callback). Close only
// disconnects: no task is ever stopped because kilnd stops.
//
// Reconcile(ctx, want, grace) is the restart path: it re-attaches to every
// wanted task still running (everything needed is in the container's labels:
// kind, log file and cap, deadline, socket or port), reports wanted tasks
// that vanished (with their exit status when containerd still knows it), and
// removes kiln-labelled containers nobody wants once they are older than
// grace.
//
// # The container contract (DESIGN.md)
//
// Training: `<image> train` with the SageMaker layout that PrepareWorkspace
// builds on the host under the run's workspace:
//
//	WS/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json -> /opt/ml/input/config (ro)
//	channel dirs (the caller's, e.g. blob-store extracts)                 -> /opt/ml/input/data/<ch> (ro)
//	WS/model                                                              -> /opt/ml/model (rw, its workload id, 0700)
//	WS/output                                                             -> /opt/ml/output (rw, its workload id, 0700)
//
// Serving: `<image> serve` with the model folder read-only at /opt/ml/model,
// listening on $KILN_SOCKET (a socket in a bind-mounted host folder), or on
// TCP 8080 inside the container's own empty network namespace, which kiln
// reaches by dialing from inside that namespace (setns on a locked OS
// thread): unmodified SageMaker images work and two versions never collide.
//
// # Hardening
//
// By default every container runs as a workload id of its own (below) with a read-only root
// filesystem (runc remounts it read-only once the mount points exist), a size-capped tmpfs on /tmp, no new
// privileges, no capabilities, containerd's default seccomp profile and an
// empty network namespace (only lo). A spec may relax one of these only by
// naming it (Relax). Memory (no swap), CPU quota and pids limits come from
// the spec. GPUs are injected by CDI name (e.g. nvidia.com/gpu=0) from the
// spec dirs given to New; an unknown device fails with its name.
//
// # Workload ids
//
// Each container that does not relax RelaxRoot runs as a host uid and gid
// that no login account has and no other running container holds: one id
// of a reserved block (DefaultIDRange: 1879048193-1879113727, after the
// block's base WorkloadIDBase, which the package's sysusers.d entry names
// kiln-workloads). The id is the container's LabelUID, so it is persisted
// with the container in containerd's own database, in the same transaction,
// before Train or Serve returns, and it is free again the moment the
// container is deleted: no second record to keep crash-safe or reconcile.
// Allocation takes the lowest id no container in any containerd namespace
// holds; allocations in one process are serialized, and two processes that
// race to an id agree that the older container keeps it (the younger is
// deleted and tries again). CheckIDRange names any local account or
// /etc/subuid range that overlaps the block.
//
// What the id buys: a local account (uid 1000, the first person on a
// Debian box) cannot signal the workload, enter /proc/PID/root (ptrace
// access checks need the same uid), connect to a serving socket (its folder
// is 0700, the workload id's), or read or write a run's model and output
// (0700, the workload id's, inside a workspace PrepareWorkspace makes
// root's 0700); two runs cannot read each other's folders even when one is
// mounted into the other. Callers keep the parents of model folders root's
// (kilnd's runs/ and models/ are 0700): a bind mount needs no path above it.
//
// Why not a user namespace: runc 1.1.5 and containerd 1.6 (Debian 12) run
// uidMappings here (`ctr run --uidmap`, 0.34-0.45 s like a plain run for the
// 2.8 MB example image, once containerd's state folder is traversable by
// the mapped root), but the image must then be owned inside the namespace.
// containerd 1.6 has no idmapped mounts for snapshots (containerd 2 with
// runc 1.2 has), so WithRemappedSnapshot chowns a copy of every file of the
// image (overlayfs copies each one up) and keeps that copy per mapping: with
// one id per container, one full copy per id and image, hundreds of MB for
// a PyTorch image. A plain reserved id gives the same separation from local
// accounts and between containers at no cost, and CDI GPUs work unchanged.
// Revisit once containerd 2 with idmapped snapshots is the floor.
//
// # Logs
//
// A task's stdout and stderr go to a file the shim appends to (cio.LogFile),
// never to FIFOs: an unread FIFO blocks the container once the pipe fills,
// e.g. while kilnd restarts. The shim cannot cap a file, so kiln does
// (copy-truncate, like logrotate): when the live file passes half the cap its
// content moves to FILE.1, so the pair stays near the cap. The cap is
// enforced while some kilnd holds the task (including after Reconcile); lines
// written in the instant between copy and truncate can be lost. FollowLog
// reads both files and follows across rotations.
//
// # cgroups
//
// Metrics decodes cgroup v1 stats (this machine) and v2 stats (fixtures in
// testdata prove the decoding); OOM is the shim's /tasks/oom event, and the
// exit code 137 that comes with it.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// DefaultCDIDirs are where nvidia-ctk writes CDI specs.
var DefaultCDIDirs = []string{"/etc/cdi", "/var/run/cdi"}

// DefaultSnapshotter unpacks images for runc.
const DefaultSnapshotter = "overlayfs"

// Runtime is a handle on one containerd namespace.
type Runtime struct {
	address     string
	namespace   string
	log         *slog.Logger
	c           *client.Client
	snapshotter string
	version     string
	cdiDirs     []string
	ids         IDRange

	idMu     sync.Mutex // serializes workload id allocation in this process
	cdiOnce  sync.Once
	cdiCache *cdi.Cache
	cdiErr   error
}

// Option changes a Runtime's defaults.
type Option func(*Runtime)

// WithCDIDirs sets the CDI spec folders (default DefaultCDIDirs).
func WithCDIDirs(dirs ...string) Option {
	return func(r *Runtime) { r.cdiDirs = dirs }
}

// WithSnapshotter picks the snapshotter images are unpacked for.
func WithSnapshotter(name string) Option {
	return func(r *Runtime) { r.snapshotter = name }
}

// WithKilnVersion is recorded in every container's labels.
func WithKilnVersion(v string) Option {
	return func(r *Runtime) { r.version = v }
}

// New prepares a client for the containerd at address; it does not dial yet.
func New(address, namespace string, log *slog.Logger, opts ...Option) (*Runtime, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := client.New(address, client.WithDefaultNamespace(namespace), client.WithDialOpts(dialOptions()))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", address, err)
	}
	r := &Runtime{address: address, namespace: namespace, log: log, c: c,
		snapshotter: DefaultSnapshotter, version: "dev", cdiDirs: DefaultCDIDirs, ids: DefaultIDRange}
	for _, o := range opts {
		o(r)
	}
	if r.ids.Count == 0 || r.ids.First == 0 || uint64(r.ids.First)+uint64(r.ids.Count) > 1<<32-1 {
		return nil, errors.Join(fmt.Errorf("%w: workload id range %d+%d: want a non-empty range of non-root 32-bit ids", ErrBadSpec, r.ids.First, r.ids.Count), c.Close())
	}
	return r, nil
}

// rootCause is the last ": "-separated part of a gRPC transport error, the
// errno a person can act on ("connect: no such file or directory").
func rootCause(err error) string {
	msg := strings.TrimSuffix(status.Convert(err).Message(), `"`)
	if i := strings.LastIndex(msg, "dial unix "); i >= 0 {
		msg = msg[i+len("dial unix "):]
		if j := strings.Index(msg, ": "); j >= 0 {
			return msg[j+2:]
		}
	}
	return msg
}

// dialOptions replace the containerd client's defaults, whose dialer retries
// a refused connect every 10 ms for as long as a connect attempt lasts: with
// containerd down that is a hundred connects a second, forever, for a
// daemon that is meant to sit idle and say "containerd is down". Here one
// connect is one attempt, and gRPC's own backoff (1 s doubling to 30 s)
// spaces the retries.
func dialOptions() []grpc.DialOption {
	bo := backoff.DefaultConfig
	bo.MaxDelay = 30 * time.Second
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 5 * time.Second}),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
	}
}

// Address is the containerd socket this runtime talks to.
func (r *Runtime) Address() string { return r.address }

// Namespace is kiln's containerd namespace.
func (r *Runtime) Namespace() string { return r.namespace }

// Version asks containerd for its version; it fails when containerd cannot be
// reached before ctx ends, which is how callers probe reachability.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	v, err := r.c.Version(ctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			// gRPC's own wording here is long and says nothing more.
			return "", fmt.Errorf("containerd at %s is unreachable: %w", r.address, ctx.Err())
		case status.Code(err) == codes.Unavailable:
			return "", fmt.Errorf("containerd at %s is unreachable: %s", r.address, rootCause(err))
		}
		return "", fmt.Errorf("containerd at %s: %w", r.address, err)
	}
	return v.Version, nil
}

// Close drops the connection. Containers and tasks keep running: closing the
// client is never a reason to stop them.
func (r *Runtime) Close() error { return r.c.Close() }

// Errors callers match with errors.Is.
var (
	// ErrImageNotFound: no image by that tag or digest; the message names it.
	ErrImageNotFound = errors.New("image not found")
	// ErrNotFound: no kiln container by that ID.
	ErrNotFound = errors.New("container not found")
	// ErrBadSpec: a spec kiln cannot run (bad ID, unknown relaxation, bad path).
	ErrBadSpec = errors.New("invalid task spec")
	// ErrCDIDevice: a requested CDI device is not in any spec dir.
	ErrCDIDevice = errors.New("unresolvable CDI device")
)
