package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// LabelUID records the host uid (and gid: they are equal) a container runs
// as: the id it holds in kiln's workload range. The label is the only record
// of the allocation: containerd stores it with the container in one
// transaction, so an id is held exactly as long as its container exists, a
// crash can neither leak nor double-book one, and nothing needs reconciling
// at start beyond what containerd already knows.
const LabelUID = "io.kiln.uid"

// LabelOwned lists (as a JSON array) the host folders a container's
// workload id was given; Delete hands them back to root.
const LabelOwned = "io.kiln.owned"

func ownedLabel(dirs ...string) string {
	b, _ := json.Marshal(dirs)
	return string(b)
}

// reclaim hands the folders the task's workload id was given, and whatever
// the id made in them, back to root, so an id that is free again owns
// nothing on disk. Training folders become 0755 (their workspace above is
// root's 0700): the trained model stays readable to a server given it;
// a socket folder stays 0700. WalkDir does not follow symlinks and Lchown
// changes a link itself, so a workload cannot steer this onto other files.
func (t *Task) reclaim() error { return reclaim(t.id, t.labels) }

// reclaim is Task.reclaim for a container known by its ID and labels (the
// sweep's and Remove's, which never made a Task of it).
func reclaim(id string, labels map[string]string) error {
	n, err := strconv.ParseUint(labels[LabelUID], 10, 32)
	if err != nil || labels[LabelOwned] == "" {
		return nil // no workload id (made before ids), or nothing handed to it
	}
	uid := uint32(n)
	var dirs []string
	if err := json.Unmarshal([]byte(labels[LabelOwned]), &dirs); err != nil {
		return fmt.Errorf("label %s of %s: %w", LabelOwned, id, err)
	}
	var errs []error
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			info, err := d.Info()
			if err != nil {
				return nil // gone meanwhile
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && (st.Uid == uid || st.Gid == uid) {
				return os.Lchown(path, 0, 0)
			}
			return nil
		})
		if err == nil && labels[LabelKind] == KindTrain {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// IDRange is a block of host uids and gids that no login account has; each
// running container holds one of them, for both its uid and its gid.
type IDRange struct {
	First, Count uint32
}

// Last is the range's last id.
func (r IDRange) Last() uint32 { return r.First + r.Count - 1 }

func (r IDRange) contains(id uint32) bool { return id >= r.First && id-r.First < r.Count }

func (r IDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last()) }

// WorkloadIDBase is the first id of the block kiln reserves, 0x70000000.
// systemd's UIDS-GIDS.md leaves 1879048192-2147352575 unused (above the
// container ranges systemd-nspawn picks from, below the foreign and
// homed-adjacent ranges and the signed-int boundary), and useradd's
// SUB_UID_MAX/SUB_GID_MAX (600100000) keeps /etc/subuid allocations below
// it, so no login account, dynamic user or rootless user namespace has these
// ids. The package's sysusers.d entry names the base id "kiln-workloads", so
// `getent passwd 1879048192` tells an operator whose block this is.
const WorkloadIDBase = 0x70000000

// DefaultIDRange is the block containers are given ids from: after the
// named base id, 65535 ids, far more than one box runs at once.
var DefaultIDRange = IDRange{First: WorkloadIDBase + 1, Count: 0xFFFF}

// WithIDRange sets the block of host ids containers run as (default
// DefaultIDRange). Every kiln runtime on one containerd should use the same
// block: allocation looks at the holders in every namespace.
func WithIDRange(r IDRange) Option {
	return func(rt *Runtime) { rt.ids = r }
}

// ErrNoIDs: every id of the workload range is held by a container.
var ErrNoIDs = errors.New("no free workload id")

// holder is a container that holds a workload id.
type holder struct {
	namespace, id string
	created       time.Time
}

// before orders two holders of the same id: the older (then the smaller
// namespace/ID) keeps it, so two allocators racing to one id agree on the
// winner without talking to each other.
func (h holder) before(o holder) bool {
	if !h.created.Equal(o.created) {
		return h.created.Before(o.created)
	}
	if h.namespace != o.namespace {
		return h.namespace < o.namespace
	}
	return h.id < o.id
}

// heldIDs maps each id in use to its holders, across every containerd
// namespace: the daemon's, the tests', another installation's.
func (r *Runtime) heldIDs(ctx context.Context) (map[uint32][]holder, error) {
	nss, err := r.c.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containerd namespaces: %w", err)
	}
	held := map[uint32][]holder{}
	for _, ns := range nss {
		ctrs, err := r.c.ContainerService().List(namespaces.WithNamespace(ctx, ns), `labels."`+LabelUID+`"`)
		if err != nil {
			return nil, fmt.Errorf("list containers of namespace %s: %w", ns, err)
		}
		for _, c := range ctrs {
			id, err := strconv.ParseUint(c.Labels[LabelUID], 10, 32)
			if err != nil {
				continue
			}
			held[uint32(id)] = append(held[uint32(id)], holder{namespace: ns, id: c.ID, created: c.CreatedAt})
		}
	}
	return held, nil
}

// freeID picks the lowest id of the range that no container holds.
func (r *Runtime) freeID(held map[uint32][]holder) (uint32, error) {
	for id := uint64(r.ids.First); id <= uint64(r.ids.Last()); id++ {
		if len(held[uint32(id)]) == 0 {
			return uint32(id), nil
		}
	}
	return 0, fmt.Errorf("%w: all %d ids of %s are held by containers", ErrNoIDs, r.ids.Count, r.ids)
}

// createWithID creates the container under a free workload id: prepare
// hands the container's host folders to the id, create makes the container
// with LabelUID set. Allocations in this process are serialized; another
// process (a second kilnd) may race to the same id, so after creating, the
// holders are listed again and the younger of two holders gives the id up
// (its container is deleted) and tries the next free one.
func (r *Runtime) createWithID(ctx context.Context, c *Common, labels map[string]string,
	prepare func(uid, gid int) error, create func() (containers.Container, error)) (uint32, error) {
	r.idMu.Lock()
	defer r.idMu.Unlock()
	for range 8 {
		held, err := r.heldIDs(ctx)
		if err != nil {
			return 0, err
		}
		id, err := r.freeID(held)
		if err != nil {
			return 0, err
		}
		if err := prepare(int(id), int(id)); err != nil {
			return 0, err
		}
		labels[LabelUID] = strconv.FormatUint(uint64(id), 10)
		mine, err := create()
		if err != nil {
			_ = prepare(0, 0) // the id never ran; it keeps nothing
			return 0, err
		}
		if held, err = r.heldIDs(ctx); err != nil {
			return 0, err
		}
		me := holder{namespace: r.namespace, id: mine.ID, created: mine.CreatedAt}
		lost := slices.ContainsFunc(held[id], func(h holder) bool {
			return (h.namespace != me.namespace || h.id != me.id) && h.before(me)
		})
		if !lost {
			return id, nil
		}
		r.log.Warn("workload id taken by a concurrent create; picking another", "container", c.ID, "uid", id)
		if err := r.c.ContainerService().Delete(ctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
			return 0, fmt.Errorf("give up workload id %d of %s: %w", id, c.ID, err)
		}
		_ = r.c.SnapshotService(r.snapshotter).Remove(context.WithoutCancel(ctx), c.ID)
	}
	return 0, fmt.Errorf("%w: %s lost the race for an id 8 times", ErrNoIDs, c.ID)
}

// CheckIDRange reports the accounts and subordinate id ranges on this
// machine that overlap r: names from passwd and group files, and the
// owners of subuid and subgid ranges. Empty means no local account can act
// as a workload. Files that do not exist are skipped.
func CheckIDRange(r IDRange, passwd, group, subuid, subgid string) ([]string, error) {
	var clash []string
	for _, f := range []string{passwd, group} {
		err := eachLine(f, func(n int, fields []string) {
			if len(fields) < 3 {
				return
			}
			if id, err := strconv.ParseUint(fields[2], 10, 32); err == nil && r.contains(uint32(id)) {
				clash = append(clash, fmt.Sprintf("%s:%d: %s has id %d", f, n, fields[0], id))
			}
		})
		if err != nil {
			return nil, err
		}
	}
	for _, f := range []string{subuid, subgid} {
		err := eachLine(f, func(n int, fields []string) {
			if len(fields) < 3 {
				return
			}
			start, err1 := strconv.ParseUint(fields[1], 10, 32)
			count, err2 := strconv.ParseUint(fields[2], 10, 32)
			if err1 != nil || err2 != nil || count == 0 {
				return
			}
			if start <= uint64(r.Last()) && start+count-1 >= uint64(r.First) {
				clash = append(clash, fmt.Sprintf("%s:%d: %s may map ids %d-%d", f, n, fields[0], start, start+count-1))
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return clash, nil
}

// eachLine calls fn with each non-comment line of a colon-separated file.
func eachLine(file string, fn func(n int, fields []string)) error {
	if file == "" {
		return nil
	}
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(n, strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	return nil
}

// UID is the host uid (and gid) the task runs as, from its LabelUID; 0
// with ok false for a container that holds no workload id (RelaxRoot, or
// made by a kiln before workload ids).
func (t *Task) UID() (uid uint32, ok bool) {
	id, err := strconv.ParseUint(t.labels[LabelUID], 10, 32)
	return uint32(id), err == nil
}
