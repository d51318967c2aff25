package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// Sentinel errors, matched with errors.Is.
var (
	ErrLocked       = errors.New("locked by another process (another kilnd on this root?)")
	ErrNewerSchema  = errors.New("database schema is newer than this kilnd supports")
	ErrClosed       = errors.New("store closed")
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid")
	ErrChainBroken  = errors.New("event chain broken")
	ErrBlobMismatch = errors.New("blob does not match its reference")
)

// DefaultLockTimeout is used when Options.LockTimeout is zero.
const DefaultLockTimeout = 2 * time.Second

// maxBatch bounds how many updates share one transaction, so one commit
// never holds acknowledged-to-be writers for long.
const maxBatch = 4096

// Options configure Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// kiln.db; zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives the store's few log lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock for event and record times; nil means time.Now.
	Now func() time.Time
}

// Store is an open kiln.db plus its blob folder. It is safe for concurrent use.
type Store struct {
	dir    string
	opened time.Time // temp files older than this are crash leftovers
	path   string
	blobs  string
	db     *bolt.DB
	log    *slog.Logger
	now    func() time.Time

	mu     sync.RWMutex // guards closed against senders on reqs
	closed bool
	reqs   chan *request
	done   chan struct{} // closed when the committer has exited

	installation string // meta/installation, set at Open; never changes

	headMu   sync.Mutex
	head     chainHead
	notify   chan struct{} // closed and replaced after each commit that appended events
	closing  chan struct{} // closed by Close, ends subscriptions
	reconMu  sync.Mutex
	lastRecn ReconcileReport

	unnamed unnamedTemps // whether blob temp files can be unnamed (blobs.go)
}

type request struct {
	ctx   context.Context
	fn    func(*Tx) error
	done  chan error
	state atomic.Int32 // reqQueued -> reqTaken (committer) or reqAbandoned (caller gave up)
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// Open opens or creates <stateDir>/kiln.db and <stateDir>/blobs/, runs the
// migrations and starts the committer. It never deletes or rewrites existing
// data when it fails.
func Open(stateDir string, opt Options) (*Store, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = DefaultLockTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("open state dir %s: %w", stateDir, err)
	}
	if err := unix.Access(stateDir, unix.W_OK); err != nil {
		return nil, fmt.Errorf("open state dir %s: not writable: %w", stateDir, err)
	}
	s := &Store{
		dir:     stateDir,
		opened:  time.Now(),
		path:    filepath.Join(stateDir, "kiln.db"),
		blobs:   filepath.Join(stateDir, "blobs"),
		log:     opt.Logger,
		now:     opt.Now,
		reqs:    make(chan *request, maxBatch),
		done:    make(chan struct{}),
		notify:  make(chan struct{}),
		closing: make(chan struct{}),
	}
	// The blobs are every dataset and model the box holds: root's alone
	// (0700, tightened on upgrade), as kiln.db is; their files stay 0444
	// so a container's bind mount of one reads it under the workload's id.
	for _, d := range []string{filepath.Join(s.blobs, "sha256"), filepath.Join(s.blobs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open blob dir %s: %w", d, err)
		}
	}
	if err := os.Chmod(s.blobs, 0o700); err != nil {
		return nil, fmt.Errorf("open blob dir %s: %w", s.blobs, err)
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{
		Timeout:      opt.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w after %s", s.path, ErrLocked, opt.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	s.db = db
	if err := s.migrate(); err != nil {
		_ = db.Close() // nothing was committed; the migration error is the one to report
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	if err := db.View(func(btx *bolt.Tx) error {
		var err error
		s.installation = (&Tx{btx: btx}).InstallationID()
		s.head, err = readHead(btx)
		return err
	}); err != nil {
		_ = db.Close() // only read so far; the read error is the one to report
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	go s.committer()
	return s, nil
}

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// Dir is the state directory the store was opened on.
func (s *Store) Dir() string { return s.dir }

// OpenReadTx is how many read transactions are open now: a count that grows
// without bound is a leaked View or cursor (the soak watches it), and a
// long-open one stops bbolt reusing freed pages.
func (s *Store) OpenReadTx() int { return s.db.Stats().OpenTxN }

// Close waits for queued updates to commit, ends subscriptions and closes
// the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs) // no sender holds mu.RLock now, so none is mid-send
	s.mu.Unlock()
	<-s.done
	close(s.closing)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

// Update runs fn in a read-write transaction shared with other concurrent
// updates (group commit) and returns once that transaction is durable. fn
// may run more than once (see the package doc's caveats); an error from fn
// rolls back fn's writes only. If ctx ends before the committer takes the
// update, it never runs and Update returns ctx's error; once taken, Update
// waits for the outcome, so fn never runs after Update returns.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	r := &request{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err() // the committer will skip it
		}
		// The committer has started it: wait for the outcome (one
		// transaction) so fn never runs after Update returns.
		return <-r.done
	}
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(btx *bolt.Tx) error {
		return fn(&Tx{btx: btx, s: s})
	})
}

// Backup writes a consistent copy of the database to w, taken in one read
// transaction (bbolt Tx.WriteTo) while writers carry on. size, when not nil,
// is told the copy's exact length before the first byte, so a streaming
// caller can announce it and a reader can tell a cut stream from a whole one.
func (s *Store) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(btx *bolt.Tx) error {
		if size != nil {
			size(btx.Size())
		}
		var err error
		n, err = btx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup %s: %w", s.path, err)
	}
	return n, nil
}

// DiskFree reports the free and total bytes of the filesystem holding the
// state dir, for the ingest watermark.
func (s *Store) DiskFree() (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	bsize := uint64(st.Bsize) //nolint:gosec // a filesystem's block size is positive
	return st.Bavail * bsize, st.Blocks * bsize, nil
}

func (s *Store) committer() {
	defer close(s.done)
	batch := make([]*request, 0, maxBatch)
	for first := range s.reqs {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// commit runs a group of updates in one transaction. If one fails, the
// transaction is rolled back, the failing caller gets its error, and the
// rest are re-run without it.
func (s *Store) commit(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // abandoned by its caller
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		failed := -1
		var failErr error
		head := s.head // only the committer writes s.head
		appended := false
		err := s.db.Update(func(btx *bolt.Tx) error {
			for i, r := range live {
				tx := &Tx{btx: btx, s: s, head: &head, appended: &appended}
				if err := call(r.fn, tx); err != nil {
					failed, failErr = i, err
					return err
				}
			}
			if appended {
				return writeHead(btx, head)
			}
			return nil
		})
		if failed >= 0 {
			live[failed].done <- failErr
			live = append(live[:failed:failed], live[failed+1:]...)
			continue
		}
		if err != nil {
			err = fmt.Errorf("commit %s: %w", s.path, err)
			s.log.Error("commit failed", "path", s.path, "err", err)
			for _, r := range live {
				r.done <- err
			}
			return
		}
		if appended {
			s.headMu.Lock()
			s.head = head
			close(s.notify)
			s.notify = make(chan struct{})
			s.headMu.Unlock()
		}
		for _, r := range live {
			r.done <- nil
		}
		return
	}
}

func call(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("update panicked: %v", p)
		}
	}()
	return fn(tx)
}

// Tx is a transaction handed to Update and View functions. It must not be
// used after the function returns.
type Tx struct {
	btx      *bolt.Tx
	s        *Store
	head     *chainHead // nil in View
	appended *bool
}

// Bolt exposes the underlying bbolt transaction for tests and migrations;
// byte slices read through it die with the transaction.
func (tx *Tx) Bolt() *bolt.Tx { return tx.btx }

func (tx *Tx) writable() error {
	if tx.head == nil {
		return fmt.Errorf("write in a read-only transaction: %w", ErrInvalid)
	}
	return nil
}
