package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// Relax names one hardening default a spec gives up. Anything not named
// stays hardened.
type Relax string

// The hardening defaults a spec may relax.
const (
	RelaxRoot           Relax = "root"            // run as the image's user (maybe root) instead of a workload id
	RelaxWritableRootfs Relax = "writable-rootfs" // a writable root filesystem
	RelaxNewPrivileges  Relax = "new-privileges"  // allow setuid binaries to gain privileges
	RelaxCapabilities   Relax = "capabilities"    // containerd's default capability set instead of none
	RelaxSeccomp        Relax = "seccomp"         // no seccomp filter
	RelaxNetwork        Relax = "network"         // the host's network namespace instead of an empty one
)

// Relaxations lists every valid Relax.
var Relaxations = []Relax{RelaxRoot, RelaxWritableRootfs, RelaxNewPrivileges, RelaxCapabilities, RelaxSeccomp, RelaxNetwork}

// Resources are a task's cgroup limits; zero means no limit.
type Resources struct {
	MemoryBytes int64   `json:"memory_bytes,omitempty"` // no swap beyond it
	CPUs        float64 `json:"cpus,omitempty"`         // CFS quota, e.g. 1.5
	Pids        int64   `json:"pids,omitempty"`
	TmpBytes    int64   `json:"tmp_bytes,omitempty"` // size of the /tmp tmpfs; default 64 MiB
}

// DefaultTmpBytes sizes /tmp when Resources.TmpBytes is zero.
const DefaultTmpBytes = 64 << 20

// DefaultLogLimit caps a task's log files when Common.LogLimit is zero.
const DefaultLogLimit = 16 << 20

// Common is what training and serving specs share.
type Common struct {
	// ID is the containerd container ID: letters and digits joined by
	// single . _ -, at most 64 bytes. ContainerID derives one from a kiln ID.
	ID string
	// Image is a tag or digest; it is resolved to a digest when the task is
	// created, and the digest is what the labels record.
	Image     string
	Pipeline  string
	Env       map[string]string
	Resources Resources
	// GPUs are CDI device names, e.g. "nvidia.com/gpu=0" or
	// "nvidia.com/gpu=GPU-<uuid>".
	GPUs  []string
	Relax []Relax
	// LogFile receives stdout and stderr; LogLimit caps it with its .1
	// companion (DefaultLogLimit when zero).
	LogFile  string
	LogLimit int64
	// Labels are extra labels; kiln's own (LabelKind and the rest) win.
	Labels map[string]string
	// Args replace the contract's verb ("train" / "serve") when set.
	Args []string
}

// Container labels kiln sets; Reconcile re-attaches from them alone.
const (
	LabelKind     = "io.kiln.kind" // "train" | "serve"
	LabelPipeline = "io.kiln.pipeline"
	LabelRun      = "io.kiln.run"
	LabelModel    = "io.kiln.model"
	LabelVersion  = "io.kiln.version"
	LabelImage    = "io.kiln.image" // the digest the task runs
	LabelLog      = "io.kiln.log"
	LabelLogLimit = "io.kiln.log-limit"
	LabelDeadline = "io.kiln.deadline" // RFC 3339; training only
	LabelOutput   = "io.kiln.output"   // host folder of /opt/ml/output; training only
	LabelSocket   = "io.kiln.socket"   // host path of the serving socket
	LabelPort     = "io.kiln.port"     // TCP port inside the task's netns
	// LabelInstallation is the random ID of the kiln.db that created the
	// container and LabelDigest the digest of the model (serve) or run
	// (train) it holds: a name is no proof, so kilnd adopts a container
	// only when both match its records (Adopt, Reconcile).
	LabelInstallation = "io.kiln.installation"
	LabelDigest       = "io.kiln.digest"
)

// Task kinds.
const (
	KindTrain = "train"
	KindServe = "serve"
)

// idRE is containerd's identifier rule; IDs are also kept to 64 bytes.
var idRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// ContainerID is the one function that names kiln's containers: kind,
// the installation's and the record's digest's first 8 hex digits, then the
// kiln ID such as "iris/m7":
// "kiln-serve-3f9a2c1b-ab12cd34-iris-m7". Two installations on one
// containerd, or one installation restored from a backup that reuses an ID
// for other content, never name two containers alike. The kiln ID comes last
// so a person (and ctr) can still find a model's container by its suffix. A
// name that would pass containerd's 64 bytes (a 32-byte pipeline name and a
// long number) or that needs its characters changed keeps the head of the
// pipeline name and a hash of the whole ID instead, so it still cannot
// collide.
func ContainerID(kind, installation, id, digest string) string {
	head := "kiln-" + kind + "-" + shortHex(installation) + "-" + shortHex(digest) + "-"
	tail := strings.ReplaceAll(id, "/", "-")
	if len(head)+len(tail) <= maxIDLen && idRE.MatchString(head+tail) {
		return head + tail
	}
	sum := sha256.Sum256([]byte(id))
	head += hex.EncodeToString(sum[:4]) + "-"
	pipe, local, _ := strings.Cut(id, "/")
	pipe, local = idSafe(pipe), idSafe(local)
	if local != "" {
		room := max(maxIDLen-len(head)-len(local)-1, 0)
		pipe = strings.TrimRight(pipe[:min(len(pipe), room)], "-")
		if pipe != "" {
			local = pipe + "-" + local
		}
	} else {
		local = pipe
	}
	return strings.TrimRight((head + local)[:min(len(head)+len(local), maxIDLen)], "-")
}

// maxIDLen is the longest container ID kiln makes (containerd allows more,
// but kiln also names the socket folder after it, under 108 bytes).
const maxIDLen = 64

// shortHex is the first 8 hex digits of a digest or ID ("sha256:" dropped),
// or "none" when there are none (a caller that knows no identity).
func shortHex(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) < 8 {
		return "none"
	}
	return idSafe(s[:8])
}

// idSafe maps s onto containerd's identifier rule: runs of other bytes
// become one "-", and separators do not lead or trail.
func idSafe(s string) string {
	var b strings.Builder
	sep := true
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
			sep = false
		} else if !sep {
			b.WriteByte('-')
			sep = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

func (c *Common) check() error {
	if !idRE.MatchString(c.ID) || len(c.ID) > maxIDLen {
		return fmt.Errorf("%w: container ID %q: want letters and digits joined by single . _ -, at most 64 bytes", ErrBadSpec, c.ID)
	}
	if c.Image == "" {
		return fmt.Errorf("%w: %s: no image", ErrBadSpec, c.ID)
	}
	for _, x := range c.Relax {
		if !slices.Contains(Relaxations, x) {
			return fmt.Errorf("%w: %s: unknown relaxation %q (known: %v)", ErrBadSpec, c.ID, x, Relaxations)
		}
	}
	if c.LogFile == "" || !filepath.IsAbs(c.LogFile) {
		return fmt.Errorf("%w: %s: log file %q must be an absolute path", ErrBadSpec, c.ID, c.LogFile)
	}
	if c.LogLimit == 0 {
		c.LogLimit = DefaultLogLimit
	}
	return nil
}

func (c *Common) relaxed(x Relax) bool { return slices.Contains(c.Relax, x) }

// labels returns the container's labels: the caller's, then kiln's.
func (r *Runtime) labels(c *Common, kind, digest string) map[string]string {
	l := maps.Clone(c.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelKind] = kind
	l[LabelVersion] = r.version
	l[LabelImage] = digest
	l[LabelLog] = c.LogFile
	l[LabelLogLimit] = strconv.FormatInt(c.LogLimit, 10)
	if c.Pipeline != "" {
		l[LabelPipeline] = c.Pipeline
	}
	return l
}

// specOpts builds the OCI spec: the image's config with args, then kiln's
// hardening and limits, then mounts, env and CDI devices.
func (r *Runtime) specOpts(c *Common, img client.Image, args []string, mounts []specs.Mount, env []string) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithDefaultSpecForPlatform("linux/amd64"),
		oci.WithImageConfigArgs(img, args),
		oci.WithHostname(c.ID),
	}
	// The uid and gid are the container's workload id, set by launch once
	// it holds one (unless RelaxRoot).
	if !c.relaxed(RelaxWritableRootfs) {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if !c.relaxed(RelaxNewPrivileges) {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if !c.relaxed(RelaxCapabilities) {
		opts = append(opts, oci.WithCapabilities(nil), oci.WithAmbientCapabilities(nil))
	}
	if !c.relaxed(RelaxSeccomp) {
		opts = append(opts, seccomp.WithDefaultProfile())
	}
	if c.relaxed(RelaxNetwork) {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	res := c.Resources
	if res.MemoryBytes > 0 {
		// memory+swap == memory: no swap beyond the limit (on v2 containerd
		// maps it to memory.swap.max = 0).
		opts = append(opts, oci.WithMemoryLimit(uint64(res.MemoryBytes)), oci.WithMemorySwap(res.MemoryBytes))
	}
	if res.CPUs > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(int64(res.CPUs*period), period))
	}
	if res.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(res.Pids))
	}
	tmp := res.TmpBytes
	if tmp <= 0 {
		tmp = DefaultTmpBytes
	}
	mounts = append(mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(tmp, 10)}})
	opts = append(opts, oci.WithMounts(mounts))
	if len(env) > 0 {
		opts = append(opts, oci.WithEnv(env))
	}
	if len(c.GPUs) > 0 {
		opts = append(opts, r.withCDIDevices(c.GPUs))
	}
	return opts
}

// withCDIDevices injects CDI devices from this runtime's own CDI cache.
// containerd's pkg/cdi.WithCDIDevices does the same through the CDI
// package's process-wide default cache; kiln keeps a cache per Runtime so
// the spec dirs are a plain option (and tests can point at a temp dir).
func (r *Runtime) withCDIDevices(devices []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		r.cdiOnce.Do(func() {
			r.cdiCache, r.cdiErr = cdi.NewCache(cdi.WithSpecDirs(r.cdiDirs...), cdi.WithAutoRefresh(false))
		})
		if r.cdiErr != nil {
			return fmt.Errorf("CDI spec dirs %v: %w", r.cdiDirs, r.cdiErr)
		}
		if err := r.cdiCache.Refresh(); err != nil {
			// A broken spec of one vendor must not block another vendor's
			// devices; injection fails below if it matters.
			r.log.Warn("CDI refresh", "dirs", r.cdiDirs, "err", err)
		}
		if unresolved, err := r.cdiCache.InjectDevices(s, devices...); err != nil {
			if len(unresolved) > 0 {
				return fmt.Errorf("%w %s (CDI spec dirs %s)", ErrCDIDevice, strings.Join(unresolved, ", "), strings.Join(r.cdiDirs, ", "))
			}
			return fmt.Errorf("inject CDI devices %s: %w", strings.Join(devices, ", "), err)
		}
		return nil
	}
}

func envList(base map[string]string, extra map[string]string) []string {
	all := maps.Clone(base)
	if all == nil {
		all = map[string]string{}
	}
	maps.Copy(all, extra)
	out := make([]string, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		out = append(out, k+"="+all[k])
	}
	return out
}

// ensureOwnedDir creates dir (and parents) and hands it to the container's
// uid and gid alone (mode 0700): kilnd (root) and that container reach it,
// no other account, not even another container of kiln's. Not being root is
// an error: a folder left to the wrong owner would be shared with whoever
// holds that id next.
func ensureOwnedDir(dir string, uid, gid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("hand %s to uid %d: %w", dir, uid, err)
	}
	return os.Chmod(dir, 0o700)
}

func bind(src, dst string, readonly bool) specs.Mount {
	opts := []string{"rbind", "nosuid", "nodev"}
	if readonly {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

func formatDeadline(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
