package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// commit validates the read batch, writes its meta blob and records the dataset (accepted or
// quarantined) with its lineage and event in one transaction.
func (m *Manager) commit(ctx context.Context, j *job, b *batchRead, start time.Time) (storage.Dataset, *Meta, error) {
	spec := j.spec
	man := &Manifest{Format: spec.Data.Format, Files: b.files}
	rep := Report{}
	d := storage.Dataset{Pipeline: j.src.pipeline, Kind: j.src.kind, Files: slices.Clone(b.refs)}
	var violations []Violation
	if b.tab != nil {
		t := b.tab
		schema, prof := t.finish()
		man.Rows, man.Label, man.Schema, man.Profile = t.rows, spec.Data.Label, schema, prof
		if t.fraction > 0 {
			man.Split = &Split{Fraction: t.fraction, Seed: spec.Evaluate.Holdout.Seed}
		}
		for _, part := range []struct {
			name string
			sink *partSink
			rows int64
			dst  **storage.BlobRef
		}{{"train", b.train, t.train, &d.Train}, {"holdout", b.holdout, t.holdout, &d.Holdout}} {
			if part.rows == 0 {
				part.sink.abort()
				continue
			}
			ref, err := part.sink.close(b.refs)
			if err != nil {
				return d, nil, fmt.Errorf("store %s part: %w", part.name, err)
			}
			*part.dst = &ref
			man.Parts = append(man.Parts, Part{Name: part.name, Digest: ref.Digest, Size: ref.Size, Rows: part.rows})
		}
		rep.Checks = t.checks()
		for _, v := range t.violations {
			violations = append(violations, *v)
		}
		if dr := spec.Data.Validate.Drift; dr != nil && j.src.kind == storage.KindData && len(violations) == 0 {
			ref, desc, err := m.index.reference(m.opt.Store, j.src.pipeline)
			if err != nil {
				return d, nil, fmt.Errorf("drift reference: %w", err)
			}
			rep.Reference = desc
			if ref.versions == 0 {
				rep.Checks = append(rep.Checks, Check{Rule: "drift", OK: true, Observed: "no reference yet (first version)", Allowed: "psi at most " + fmtFrac(dr.PSIMax)})
			} else {
				rep.Drift = ref.drift(prof, spec.Data.Label)
				worst, worstName := -1.0, ""
				for _, name := range sortedKeys(rep.Drift) {
					if p := rep.Drift[name].PSI; p != nil && *p > worst {
						worst, worstName = *p, name
					}
				}
				c := Check{Rule: "drift", OK: worst <= dr.PSIMax, Allowed: "psi at most " + fmtFrac(dr.PSIMax)}
				if worstName != "" {
					c.Observed = fmt.Sprintf("psi %s (%s)", fmtFrac(worst), worstName)
				} else {
					c.Observed = "no feature with enough values to compare"
				}
				rep.Checks = append(rep.Checks, c)
				if !c.OK {
					violations = append(violations, Violation{Rule: "drift", Column: worstName,
						Observed: "psi " + fmtFrac(worst), Allowed: "at most " + fmtFrac(dr.PSIMax) + " against " + desc})
				}
			}
		}
	} else {
		man.Rows = int64(len(b.files))
		violations = append(violations, fileRules(spec, b.files, &rep)...)
	}
	d.Rows = man.Rows
	rep.OK = len(violations) == 0
	rep.Violations = violations
	manJSON, err := json.Marshal(man)
	if err != nil {
		return d, nil, err
	}
	sum := sha256.Sum256(manJSON)
	d.Digest = "sha256:" + hex.EncodeToString(sum[:])
	meta := &Meta{V: 1, Manifest: man, Report: rep}
	metaRef, err := m.putMeta(ctx, meta)
	if err != nil {
		return d, nil, err
	}
	d.Files = append(d.Files, storage.FileRef{Path: MetaName, Blob: metaRef})
	d.State = storage.DatasetAccepted
	if !rep.OK {
		d.State = storage.DatasetQuarantined
		d.Reason = violations[0].String()
	}
	details := map[string]string{
		"path": quoteName(filepath.Join(j.src.dir, j.name)), "digest": d.Digest, "rows": strconv.FormatInt(d.Rows, 10),
		"files": strconv.Itoa(len(b.files)), "took": time.Since(start).Round(time.Microsecond).String(),
	}
	for _, p := range man.Parts {
		details[p.Name+"_rows"] = strconv.FormatInt(p.Rows, 10)
	}
	kind := "dataset.accepted"
	if !rep.OK {
		kind = "dataset.quarantined"
		v := violations[0]
		details["rule"], details["observed"], details["allowed"] = v.Rule, v.Observed, v.Allowed
		if v.File != "" {
			details["file"] = quoteName(v.File)
		}
		if v.Line > 0 {
			details["line"] = strconv.FormatInt(v.Line, 10)
		}
		if v.Column != "" {
			details["column"] = v.Column
		}
	}
	out, err := m.record(ctx, d, b.owner, kind, details, violations)
	return out, meta, err
}

func fileRules(spec *config.Pipeline, files []ManifestFile, rep *Report) []Violation {
	fr := spec.Data.Validate.Files
	var out []Violation
	rows := spec.Data.Validate.Rows
	n := len(files)
	if rows.Min > 0 && n < rows.Min || rows.Max > 0 && n > rows.Max {
		out = append(out, Violation{Rule: "rows", Observed: fmt.Sprintf("%d files", n), Allowed: fmt.Sprintf("%d to %d files (validate.rows)", rows.Min, rows.Max)})
	}
	rep.Checks = append(rep.Checks, Check{Rule: "rows", OK: len(out) == 0, Observed: fmt.Sprintf("%d files", n)})
	if fr == nil {
		return out
	}
	if fr.MaxCount > 0 {
		ok := n <= fr.MaxCount
		rep.Checks = append(rep.Checks, Check{Rule: "files.max_count", OK: ok, Observed: strconv.Itoa(n), Allowed: "at most " + strconv.Itoa(fr.MaxCount)})
		if !ok {
			out = append(out, Violation{Rule: "files.max_count", Observed: fmt.Sprintf("%d files", n), Allowed: fmt.Sprintf("at most %d", fr.MaxCount)})
		}
	}
	for _, f := range files {
		if len(fr.Extensions) > 0 && !slices.ContainsFunc(fr.Extensions, func(e string) bool { return strings.EqualFold(filepath.Ext(f.Path), e) }) {
			out = append(out, Violation{Rule: "files.extensions", File: f.Path, Observed: strconv.Quote(filepath.Ext(f.Path)), Allowed: strings.Join(fr.Extensions, ", ")})
			break
		}
	}
	rep.Checks = append(rep.Checks, Check{Rule: "files.extensions", OK: !slices.ContainsFunc(out, func(v Violation) bool { return v.Rule == "files.extensions" })})
	if fr.MaxSize > 0 {
		ok := true
		for _, f := range files {
			if f.Size > int64(fr.MaxSize) {
				out = append(out, Violation{Rule: "files.max_size", File: f.Path, Observed: fmt.Sprintf("%d bytes", f.Size), Allowed: fmt.Sprintf("at most %d bytes", int64(fr.MaxSize))})
				ok = false
				break
			}
		}
		rep.Checks = append(rep.Checks, Check{Rule: "files.max_size", OK: ok})
	}
	return out
}

func (m *Manager) putMeta(ctx context.Context, meta *Meta) (storage.BlobRef, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return storage.BlobRef{}, err
	}
	return m.opt.Store.PutBlob(ctx, bytes.NewReader(b))
}

// EdgeDropped links the uid owning a dropped batch to the dataset made of it.
const EdgeDropped storage.EdgeType = "dropped"

// record creates the dataset with its lineage and event in one transaction.
func (m *Manager) record(ctx context.Context, d storage.Dataset, owner uint32, kind string, details map[string]string, violations []Violation) (storage.Dataset, error) {
	var out storage.Dataset
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		var err error
		out, err = tx.CreateDataset(d)
		if err != nil {
			return err
		}
		if err := tx.Link("uid:"+strconv.FormatUint(uint64(owner), 10), out.ID, EdgeDropped); err != nil {
			return err
		}
		if len(violations) > 0 {
			if err := tx.Link("check:"+violations[0].Rule, out.ID, storage.EdgeQuarantined); err != nil {
				return err
			}
		}
		_, err = tx.Append(storage.Event{Kind: kind, Pipeline: d.Pipeline, Refs: []string{out.ID}, Details: details})
		return err
	})
	return out, err
}

// duplicate handles a batch whose content is already a dataset: an event, and the drop
// folder emptied (into the quarantine folder when the first copy is quarantined, which also
// finishes a move a crash interrupted).
func (m *Manager) duplicate(ctx context.Context, j *job, root string, ents []entry, existing string) {
	m.event(ctx, storage.Event{Kind: "dataset.duplicate", Pipeline: j.src.pipeline, Refs: []string{existing},
		Details: map[string]string{"path": quoteName(root), "kind": string(j.src.kind)}})
	m.observe("duplicate", root, existing)
	var d storage.Dataset
	err := m.opt.Store.View(func(tx *storage.Tx) error {
		var err error
		d, err = tx.Dataset(existing)
		return err
	})
	if err == nil && d.State == storage.DatasetQuarantined {
		qdir := filepath.Join(m.opt.QuarantineDir, d.ID)
		if _, err := os.Lstat(filepath.Join(qdir, j.name)); errors.Is(err, fs.ErrNotExist) {
			if err := m.moveToQuarantine(d, root, j.name, nil); err == nil {
				return
			}
		}
	}
	if err := removeEntries(root, ents, j.batch); err != nil {
		m.log.Error("ingest: remove duplicate", "path", root, "err", err)
	}
}

func (m *Manager) event(ctx context.Context, e storage.Event) {
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.Append(e)
		return err
	})
	if err != nil {
		m.log.Error("ingest: record event", "kind", e.Kind, "err", err)
	}
}

// removeEntries empties the drop folder of a committed batch: each file only while the path
// still names the file that was read, then the marker, then the folders.
func removeEntries(root string, ents []entry, batch bool) error {
	var errs []error
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Lstat(e.path, &st); err != nil {
			continue
		}
		if o, ok := e.fi.Sys().(*syscall.Stat_t); ok && (o.Ino != st.Ino || o.Dev != st.Dev) {
			continue // replaced since: the new file is somebody else's drop
		}
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !batch {
		return errors.Join(errs...)
	}
	_ = os.Remove(filepath.Join(root, SuccessMarker))
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		// A folder still holding leftovers (temp names, a file added since) stays.
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
