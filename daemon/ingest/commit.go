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
	"github.com/kiln-edge/kiln/daemon/crashpoint"
	"github.com/kiln-edge/kiln/storage"
)

// commitIn is what commit records: a batch read from a drop folder, or rows the monitor
// joined (source set).
type commitIn struct {
	spec     *config.Pipeline
	pipeline string
	kind     storage.DatasetKind
	path     string // the drop path, for the event ("" when joined)
	owner    uint32 // the dropped files' owner (edge dropped)
	source   string // joined: the labels version the rows come from (edge joined)
	b        *batchRead
	start    time.Time
}

// commit validates the read batch, writes its meta blob and records the dataset (accepted or
// quarantined) with its lineage and event in one transaction.
func (m *Manager) commit(ctx context.Context, j *job, b *batchRead, start time.Time) (storage.Dataset, *Meta, error) {
	return m.commitBatch(ctx, commitIn{spec: j.spec, pipeline: j.src.pipeline, kind: j.src.kind,
		path: filepath.Join(j.src.dir, j.name), owner: b.owner, b: b, start: start})
}

func (m *Manager) commitBatch(ctx context.Context, in commitIn) (storage.Dataset, *Meta, error) {
	spec, b := in.spec, in.b
	man := &Manifest{Format: spec.Data.Format, Files: b.files, Source: in.source}
	rep := Report{}
	d := storage.Dataset{Pipeline: in.pipeline, Kind: in.kind, Source: in.source, Format: spec.Data.Format, Files: slices.Clone(b.refs)}
	var violations []Violation
	if b.tab != nil {
		t := b.tab
		// An images pipeline's late labels are the CSV or JSONL they came in.
		d.Format, man.Format = t.format, t.format
		schema, prof := t.finish()
		man.Rows, man.Label, man.Schema, man.Profile = t.rows, spec.Data.Label, schema, prof
		if in.kind == storage.KindFeedback {
			d.Feedback = t.fbType
			if in.source != "" && t.fbType == storage.FeedbackRows {
				d.Feedback = storage.FeedbackJoined
			}
			man.Feedback = d.Feedback
			man.Rows = t.usableRows()
			rep.Feedback = t.feedbackCounts()
			rep.Feedback.Type = d.Feedback
			for _, v := range t.leftOut {
				rep.LeftOut = append(rep.LeftOut, *v)
			}
		}
		if t.fraction > 0 && t.fbType != storage.FeedbackLabels {
			man.Split = &Split{Fraction: t.fraction, Seed: spec.Evaluate.Holdout.Seed}
		}
		parts := []struct {
			name string
			sink *partSink
			rows int64
			dst  **storage.BlobRef
		}{{"train", b.train, t.train, &d.Train}, {"holdout", b.holdout, t.holdout, &d.Holdout}}
		var labels *storage.BlobRef
		if t.fbType == storage.FeedbackLabels {
			// One normalised part, request_id,label, named in Files (see LabelsName).
			man.Label = "label"
			parts[0].name, parts[0].rows, parts[0].dst = "labels", t.usable, &labels
			parts[1].rows = 0
		}
		for _, part := range parts {
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
		if labels != nil {
			d.Files = append(d.Files, storage.FileRef{Path: LabelsName, Blob: *labels})
		}
		rep.Checks = t.checks()
		for _, v := range t.violations {
			violations = append(violations, *v)
		}
		if in.kind == storage.KindData && len(violations) == 0 {
			v, err := m.driftCheck(spec, in.pipeline, prof, spec.Data.Label, &rep)
			if err != nil {
				return d, nil, err
			}
			if v != nil {
				violations = append(violations, *v)
			}
		}
	} else if b.img != nil {
		var err error
		if violations, err = m.imageVersion(in, man, &rep, &d); err != nil {
			return d, nil, err
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
	crashpoint.Hit("ingest.after-blob-put")
	d.State = storage.DatasetAccepted
	if !rep.OK {
		d.State = storage.DatasetQuarantined
		d.Reason = violations[0].String()
	}
	details := map[string]string{
		"digest": d.Digest, "rows": strconv.FormatInt(d.Rows, 10), "kind": string(in.kind),
		"files": strconv.Itoa(len(b.files)), "took": time.Since(in.start).Round(time.Microsecond).String(),
	}
	if in.path != "" {
		details["path"] = quoteName(in.path)
	}
	if d.Feedback != "" {
		details["feedback"] = d.Feedback
	}
	if in.source != "" {
		details["source"] = in.source
	}
	if c := rep.Feedback; c != nil {
		details["rows_read"] = strconv.FormatInt(c.Read, 10) // "read" is "no" on a batch rejected unread
		details["left_out"] = strconv.FormatInt(c.Read-c.Usable, 10)
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
	parent, edge := "uid:"+strconv.FormatUint(uint64(in.owner), 10), EdgeDropped
	if in.source != "" {
		parent, edge = in.source, storage.EdgeJoined
	}
	out, err := m.record(ctx, d, parent, edge, kind, details, violations)
	return out, meta, err
}

// driftCheck measures a data batch's profile against the pipeline's drift reference, when
// validate.drift is set, adding the check to rep; the violation is nil when it passed.
func (m *Manager) driftCheck(spec *config.Pipeline, pipeline string, prof map[string]ColumnProfile, label string, rep *Report) (*Violation, error) {
	dr := spec.Data.Validate.Drift
	if dr == nil {
		return nil, nil
	}
	ref, desc, err := m.index.reference(m.opt.Store, pipeline)
	if err != nil {
		return nil, fmt.Errorf("drift reference: %w", err)
	}
	rep.Reference = desc
	if ref.versions == 0 {
		rep.Checks = append(rep.Checks, Check{Rule: "drift", OK: true, Observed: "no reference yet (first version)", Allowed: "psi at most " + fmtFrac(dr.PSIMax)})
		return nil, nil
	}
	rep.Drift = ref.drift(prof, label)
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
	if c.OK {
		return nil, nil
	}
	return &Violation{Rule: "drift", Column: worstName, Observed: "psi " + fmtFrac(worst), Allowed: "at most " + fmtFrac(dr.PSIMax) + " against " + desc}, nil
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

// record creates the dataset with its lineage (parent -edge-> dataset) and event in one
// transaction. A joined version whose source already has one is not made twice: the
// existing one is returned (CommitJoined is retried after crashes).
func (m *Manager) record(ctx context.Context, d storage.Dataset, parent string, edge storage.EdgeType, kind string, details map[string]string, violations []Violation) (storage.Dataset, error) {
	var out storage.Dataset
	err := m.opt.Store.Update(ctx, func(tx *storage.Tx) error {
		if d.Source != "" {
			prev, ok, err := joinedFrom(tx, d.Pipeline, d.Source)
			if err != nil || ok {
				out = prev
				return err
			}
		}
		var err error
		out, err = tx.CreateDataset(d)
		if err != nil {
			return err
		}
		if err := tx.Link(parent, out.ID, edge); err != nil {
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
	var d storage.Dataset
	err := m.opt.Store.View(func(tx *storage.Tx) error {
		var err error
		d, err = tx.Dataset(existing)
		return err
	})
	details := map[string]string{"path": quoteName(root), "kind": string(j.src.kind)}
	if d.Feedback != "" {
		details["feedback"] = d.Feedback
	}
	m.event(ctx, storage.Event{Kind: "dataset.duplicate", Pipeline: j.src.pipeline, Refs: []string{existing}, Details: details})
	m.observe("duplicate", root, existing)
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
