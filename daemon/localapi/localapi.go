// Package localapi serves kilnd's control API on a unix socket and decides,
// for every request, whether its caller may make it.
//
// Identity comes from the kernel, not from the request: SO_PEERCRED gives the
// caller's uid, gid and pid when the connection is accepted (ConnContext), and
// the caller's supplementary groups are read from /proc/<pid>/status. The
// socket itself is mode 0666, so the route table is the only gate: every route
// declares itself read or write, root and the admin group may write, members
// of the read or admin group may read (admin implies read), anyone else gets
// 403 with a message naming the groups. A write route may name the requests
// that change nothing (a dry run) as reads. This follows Tailscale's LocalAPI.
//
// The filesystem cannot say "admin implies read": the drop folders and the
// pipeline endpoint sockets belong to the read group alone (one group per
// file, and no ACLs are assumed), so an admin who drops data or calls an
// endpoint directly needs both memberships (usermod -aG kiln,kiln-admin).
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Identity is who is on the other end of a connection, as the kernel says.
type Identity struct {
	UID    uint32
	GID    uint32
	PID    int32
	Groups []uint32 // primary and supplementary
}

// Actor names the caller in events: "uid:1000".
func (id Identity) Actor() string { return "uid:" + strconv.FormatUint(uint64(id.UID), 10) }

type identityKey struct{}

// errNoIdentity marks a connection the kernel gave no credentials for; such a
// request is refused rather than treated as anonymous.
var errNoIdentity = errors.New("no peer credentials on connection")

// ConnContext is an http.Server.ConnContext that attaches the peer's Identity.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	id, err := peerIdentity(c)
	if err != nil {
		return context.WithValue(ctx, identityKey{}, err)
	}
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the caller attached by ConnContext.
func IdentityFrom(ctx context.Context) (Identity, error) {
	switch v := ctx.Value(identityKey{}).(type) {
	case Identity:
		return v, nil
	case error:
		return Identity{}, v
	}
	return Identity{}, errNoIdentity
}

func peerIdentity(c net.Conn) (Identity, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Identity{}, fmt.Errorf("%w: %T is not a unix connection", errNoIdentity, c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Identity{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Identity{}, err
	}
	if credErr != nil {
		return Identity{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	id := Identity{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Groups: []uint32{cred.Gid}}
	id.Groups = append(id.Groups, procGroups(cred.Pid, cred.Uid)...)
	return id, nil
}

// procGroups reads the supplementary groups the peer process really holds.
// When the process is gone already (or /proc is another pid namespace's), it
// falls back to the user database's view of the uid.
func procGroups(pid int32, uid uint32) []uint32 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			rest, ok := strings.CutPrefix(line, "Groups:")
			if !ok {
				continue
			}
			var gids []uint32
			for f := range strings.FieldsSeq(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					gids = append(gids, uint32(g))
				}
			}
			return gids
		}
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var gids []uint32
	for _, s := range ids {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil {
			gids = append(gids, uint32(g))
		}
	}
	return gids
}

// Groups names the two groups that grant access. They are looked up on each
// request, so groups created after kilnd started (by a package install) work
// at once.
type Groups struct {
	Read  string
	Admin string
}

// Allowed reports whether id may use a route of the given access, and if not,
// a message for the caller.
func (g Groups) Allowed(id Identity, access api.Access) (bool, string) {
	if id.UID == 0 {
		return true, ""
	}
	if g.member(id, g.Admin) {
		return true, ""
	}
	if access == api.Read && g.member(id, g.Read) {
		return true, ""
	}
	if access == api.Write {
		return false, fmt.Sprintf("permission denied: uid %d may not change kilnd; this needs root or membership in group %q", id.UID, g.Admin)
	}
	return false, fmt.Sprintf("permission denied: uid %d is in neither group %q nor %q; ask an admin to add you (usermod -aG %s USER)", id.UID, g.Read, g.Admin, g.Read)
}

func (g Groups) member(id Identity, name string) bool {
	if name == "" {
		return false
	}
	grp, err := user.LookupGroup(name)
	if err != nil {
		return false
	}
	gid, err := strconv.ParseUint(grp.Gid, 10, 32)
	if err != nil {
		return false
	}
	return slices.Contains(id.Groups, uint32(gid))
}

// Route is one entry of the API: a method and path pattern (net/http's
// ServeMux syntax), what access it needs, and its handler.
type Route struct {
	Method  string
	Path    string
	Access  api.Access
	Handler http.HandlerFunc
	// ReadIf, on a write route, names the requests that change nothing and
	// so need only read access (POST /v1/gc?dry_run=1: a reader may ask
	// what gc would remove). It must look at the request line alone, never
	// the body: the check runs before the handler.
	ReadIf func(*http.Request) bool
}

// access is what this request on the route needs.
func (r Route) access(req *http.Request) api.Access {
	if r.Access == api.Write && r.ReadIf != nil && r.ReadIf(req) {
		return api.Read
	}
	return r.Access
}

// NewHandler builds the API handler: every route is wrapped in the access
// check, and a route without a declared access is a programming error.
func NewHandler(routes []Route, groups func() Groups, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	for _, r := range routes {
		if r.Access != api.Read && r.Access != api.Write {
			return nil, fmt.Errorf("route %s %s declares no access (read or write)", r.Method, r.Path)
		}
		mux.Handle(r.Method+" "+r.Path, guard(r, groups, log))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", req.Method, req.URL.Path))
	})
	return mux, nil
}

func guard(r Route, groups func() Groups, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, err := IdentityFrom(req.Context())
		if err != nil {
			WriteError(w, http.StatusForbidden, "permission denied: "+err.Error())
			return
		}
		access := r.access(req)
		if ok, msg := groups().Allowed(id, access); !ok {
			log.Info("api request refused", "method", req.Method, "path", req.URL.Path, "uid", id.UID, "access", string(access))
			WriteError(w, http.StatusForbidden, msg)
			return
		}
		r.Handler(w, req)
	})
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// WriteError answers with an api.Error body.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, api.Error{Error: msg})
}

// Listen creates the API socket at path. A socket left by a dead kilnd is
// detected by dialing it first and only then removed; a live one, or a path
// that is not a socket, is refused and left untouched.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if n := len(path); n > maxSocketPath {
		return nil, fmt.Errorf("socket path %q is %d bytes; unix sockets allow at most %d (use --run-dir to move sockets)", path, n, maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket path %s exists and is not a socket (%s); refusing to replace it", path, fi.Mode().Type())
		}
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("socket %s is in use: another kilnd is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, unwrapSyscall(err))
	}
	if err := os.Chmod(path, mode); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// maxSocketPath is sun_path's 108 bytes less the terminating NUL.
const maxSocketPath = 107

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
