package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultKeepModels is the retention when a pipeline names none.
const DefaultKeepModels = 10

// DefaultBlobGrace protects unreferenced blobs younger than this: a blob is
// Put before the record naming it commits.
const DefaultBlobGrace = time.Hour

// GCPolicy says what garbage collection keeps.
type GCPolicy struct {
	// KeepModels is the number of newest models kept per pipeline; a
	// pipeline missing here keeps DefaultModels.
	KeepModels map[string]int
	// DefaultModels applies to pipelines not in KeepModels; 0 means
	// DefaultKeepModels.
	DefaultModels int
	// QuarantineAge expires quarantined datasets older than this; 0 never.
	QuarantineAge time.Duration
	// RunLogAge expires logs of runs finished longer ago than this; 0 never.
	RunLogAge time.Duration
	// BlobGrace keeps unreferenced blobs modified within it; 0 means
	// DefaultBlobGrace.
	BlobGrace time.Duration
	// DryRun reports without changing anything.
	DryRun bool
}

// RunLog names a run log GC expired; the caller removes the file.
type RunLog struct {
	Run  string `json:"run"`
	Path string `json:"path"`
}

// GCReport says what GC kept and released. The caller acts on the parts that
// live outside storage: quarantine folders, run logs and images.
type GCReport struct {
	KeptModels        []string  `json:"kept_models"`
	PrunedModels      []string  `json:"pruned_models"`      // files released; record and lineage kept
	Protected         int       `json:"protected"`          // records kept models and live deployments descend from
	DeletedBlobs      []BlobRef `json:"deleted_blobs"`      // unreferenced blobs removed (or that would be, in a dry run)
	FreedBytes        int64     `json:"freed_bytes"`        //
	ExpiredQuarantine []string  `json:"expired_quarantine"` // dataset IDs: remove quarantine/<p>/<id>/
	ExpiredRunLogs    []RunLog  `json:"expired_run_logs"`   // remove these files
	KeepImages        []string  `json:"keep_images"`        // image digests kept models and unfinished runs need
	DryRun            bool      `json:"dry_run,omitempty"`  //
	Took              string    `json:"took,omitempty"`     //
	BlobErrors        []string  `json:"blob_errors,omitempty"`
}

// GC applies the retention policy: models beyond the newest N per pipeline
// that no live deployment uses are pruned (their files released, their
// records and lineage kept), anything a kept model or a live deployment
// descends from is protected, quarantined batches and run logs past their
// age are expired, and blobs no record names are deleted.
func (s *Store) GC(ctx context.Context, p GCPolicy) (GCReport, error) {
	start := time.Now()
	if p.DefaultModels <= 0 {
		p.DefaultModels = DefaultKeepModels
	}
	if p.BlobGrace <= 0 {
		p.BlobGrace = DefaultBlobGrace
	}
	var rep GCReport
	plan := func(tx *Tx) error {
		rep = GCReport{DryRun: p.DryRun}
		return tx.gcRecords(p, &rep)
	}
	var err error
	if p.DryRun {
		err = s.View(plan)
	} else {
		err = s.Update(ctx, plan)
	}
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	if err := s.gcBlobs(ctx, p, &rep); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	return rep, nil
}

func (tx *Tx) gcRecords(p GCPolicy, rep *GCReport) error {
	now := tx.s.now()
	models, err := tx.Models("")
	if err != nil {
		return err
	}
	deploys, err := tx.Deployments("")
	if err != nil {
		return err
	}
	byPipe := map[string][]Model{}
	for _, m := range models {
		byPipe[m.Pipeline] = append(byPipe[m.Pipeline], m)
	}
	keep := map[string]bool{}
	roots := []string{}
	for pipe, ms := range byPipe {
		n, ok := p.KeepModels[pipe]
		if !ok {
			n = p.DefaultModels
		}
		// listRec returns key order, which is numeric ID order: newest last.
		for i, m := range ms {
			if i >= len(ms)-n || m.State == ModelLive || m.State == ModelStandby {
				keep[m.ID] = true
			}
		}
	}
	for _, d := range deploys {
		if d.State == DeployLive || d.State == DeployStandby {
			keep[d.Model] = true
			roots = append(roots, d.ID)
		}
	}
	for id := range keep {
		roots = append(roots, id)
	}
	protected := map[string]bool{}
	for _, r := range roots {
		protected[r] = true
		anc, err := tx.Ancestors(r, 0)
		if err != nil {
			return err
		}
		for _, a := range anc {
			protected[a.ID] = true
		}
	}
	rep.Protected = len(protected)
	images := map[string]bool{}
	for _, m := range models {
		if keep[m.ID] || protected[m.ID] {
			rep.KeptModels = append(rep.KeptModels, m.ID)
			if m.ServeImage != "" {
				images[m.ServeImage] = true
			}
			continue
		}
		if m.Pruned {
			continue
		}
		rep.PrunedModels = append(rep.PrunedModels, m.ID)
		if !p.DryRun {
			m.Pruned = true
			if err := tx.PutModel(m); err != nil {
				return err
			}
		}
	}
	runs, err := tx.Runs("")
	if err != nil {
		return err
	}
	for _, r := range runs {
		unfinished := r.State == RunQueued || r.State == RunRunning
		if r.Image != "" && (protected[r.ID] || unfinished) {
			images[r.Image] = true
		}
		if p.RunLogAge > 0 && !unfinished && r.LogPath != "" && !r.LogGone && !r.Finished.IsZero() &&
			now.Sub(r.Finished) > p.RunLogAge {
			rep.ExpiredRunLogs = append(rep.ExpiredRunLogs, RunLog{Run: r.ID, Path: r.LogPath})
			if !p.DryRun {
				r.LogGone = true
				if err := tx.PutRun(r); err != nil {
					return err
				}
			}
		}
	}
	if p.QuarantineAge > 0 {
		ds, err := tx.Datasets("")
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.State == DatasetQuarantined && !protected[d.ID] && now.Sub(d.Created) > p.QuarantineAge {
				rep.ExpiredQuarantine = append(rep.ExpiredQuarantine, d.ID)
				if !p.DryRun {
					d.State = DatasetExpired
					if err := tx.PutDataset(d); err != nil {
						return err
					}
				}
			}
		}
	}
	for img := range images {
		rep.KeepImages = append(rep.KeepImages, img)
	}
	slices.Sort(rep.KeepImages)
	slices.Sort(rep.KeptModels)
	return nil
}

// gcBlobs deletes blob files no record names. A blob is re-checked against
// blobrefs just before removal, and PutBlob refreshes the mtime of a blob it
// deduplicates against, so the grace period covers a Put whose record has
// not committed yet.
func (s *Store) gcBlobs(ctx context.Context, p GCPolicy, rep *GCReport) error {
	root := filepath.Join(s.blobs, "sha256")
	dirs, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-p.BlobGrace)
	// In a dry run the records GC would release still name their blobs.
	going := map[string]bool{}
	if p.DryRun {
		for _, id := range rep.PrunedModels {
			going[id] = true
		}
		for _, id := range rep.ExpiredQuarantine {
			going[id] = true
		}
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			digest := digestPrefix + f.Name()
			if !validDigest(digest) {
				continue
			}
			info, err := f.Info()
			if err != nil || info.ModTime().After(cutoff) {
				continue
			}
			referenced := false
			if err := s.db.View(func(btx *bolt.Tx) error {
				prefix := edgeKey([]byte(digest), nil)
				c := btx.Bucket(bucketBlobRefs).Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
					if !going[string(k[len(prefix):])] {
						referenced = true
						break
					}
				}
				return nil
			}); err != nil {
				return err
			}
			if referenced {
				continue
			}
			rep.DeletedBlobs = append(rep.DeletedBlobs, BlobRef{Digest: digest, Size: info.Size()})
			rep.FreedBytes += info.Size()
			if !p.DryRun {
				if err := os.Remove(filepath.Join(root, d.Name(), f.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					rep.BlobErrors = append(rep.BlobErrors, err.Error())
				}
			}
		}
	}
	return nil
}

// ReconcileReport is what start-up reconciliation found; `kiln doctor`
// shows it.
type ReconcileReport struct {
	Time             time.Time `json:"time"`
	TempFilesRemoved []string  `json:"temp_files_removed"`
	// MissingBlobs are "sha256:<hex> (size N) needed by iris/d3, iris/m2":
	// blobs a record names that are absent or the wrong size.
	MissingBlobs []string `json:"missing_blobs"`
	BlobsChecked int      `json:"blobs_checked"`
	Took         string   `json:"took"`
}

// Reconcile removes temp files left by a crashed Put and reports blobs that
// records name but the folder lacks. Temp files of Puts still in flight are
// left alone. The result is kept for LastReconcile.
func (s *Store) Reconcile(ctx context.Context) (ReconcileReport, error) {
	start := time.Now()
	rep := ReconcileReport{Time: s.now().UTC().Round(0)}
	tmpDir := filepath.Join(s.blobs, "tmp")
	ents, err := os.ReadDir(tmpDir)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "put-") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(s.opened) {
			continue // an in-flight Put of this process
		}
		p := filepath.Join(tmpDir, e.Name())
		if err := os.Remove(p); err == nil {
			rep.TempFilesRemoved = append(rep.TempFilesRemoved, p)
		}
	}
	type need struct {
		size   int64
		owners []string
	}
	needs := map[string]*need{}
	var order []string
	err = s.db.View(func(btx *bolt.Tx) error {
		return btx.Bucket(bucketBlobRefs).ForEach(func(k, v []byte) error {
			dg, owner, _ := bytes.Cut(k, []byte{0})
			n, ok := needs[string(dg)]
			if !ok {
				n = &need{size: int64(beUint64(v))} //nolint:gosec // written from a BlobRef.Size checked non-negative
				needs[string(dg)] = n
				order = append(order, string(dg))
			}
			n.owners = append(n.owners, string(owner))
			return nil
		})
	})
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	for _, dg := range order {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		n := needs[dg]
		rep.BlobsChecked++
		p, _ := s.BlobPath(dg)
		if st, err := os.Stat(p); err != nil || st.Size() != n.size {
			rep.MissingBlobs = append(rep.MissingBlobs, fmt.Sprintf("%s (size %d) needed by %s", dg, n.size, strings.Join(n.owners, ", ")))
		}
	}
	rep.Took = time.Since(start).Round(time.Microsecond).String()
	s.reconMu.Lock()
	s.lastRecn = rep
	s.reconMu.Unlock()
	if len(rep.MissingBlobs) > 0 {
		s.log.Warn("blobs missing", "count", len(rep.MissingBlobs), "first", rep.MissingBlobs[0])
	}
	return rep, nil
}

// LastReconcile returns the result of the last Reconcile.
func (s *Store) LastReconcile() ReconcileReport {
	s.reconMu.Lock()
	defer s.reconMu.Unlock()
	return s.lastRecn
}

func beUint64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 |
		uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])
}
