package ingest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// reject records a batch that was refused before it was read: a quarantined dataset with no
// content, and the entry moved aside so it is not seen again.
func (m *Manager) reject(ctx context.Context, j *job, root string, v *Violation) {
	var owner uint32
	if fi, err := os.Lstat(root); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = st.Uid
		}
	}
	meta := &Meta{V: 1, Report: Report{OK: false, Violations: []Violation{*v}}}
	ref, err := m.putMeta(ctx, meta)
	if err != nil {
		m.log.Error("ingest: store rejection", "path", root, "err", err)
		return
	}
	d := storage.Dataset{Pipeline: j.src.pipeline, Kind: j.src.kind, Format: j.spec.Data.Format, State: storage.DatasetQuarantined,
		Files: []storage.FileRef{{Path: MetaName, Blob: ref}}, Reason: v.String()}
	details := map[string]string{"path": quoteName(root), "rule": v.Rule, "observed": v.Observed, "allowed": v.Allowed,
		"file": quoteName(v.File), "read": "no", "kind": string(j.src.kind)}
	d, err = m.record(ctx, d, "uid:"+strconv.FormatUint(uint64(owner), 10), EdgeDropped, "dataset.quarantined", details, []Violation{*v})
	if err != nil {
		m.log.Error("ingest: record rejection", "path", root, "err", err)
		return
	}
	m.observe("quarantined", root, d.ID)
	m.log.Warn("ingest: rejected", "path", quoteName(root), "dataset", d.ID, "reason", d.Reason)
	if err := m.moveToQuarantine(d, root, j.name, reasonOf(d, meta.Report)); err != nil {
		m.log.Error("ingest: move rejected entry to quarantine", "path", quoteName(root), "dataset", d.ID, "err", err)
	}
}

// Reason is REASON.json in quarantine/<pipeline>/<dN>/: the first violation in full, and all
// of them.
type Reason struct {
	Dataset    string      `json:"dataset"`
	Pipeline   string      `json:"pipeline"`
	Kind       string      `json:"kind"`
	Rule       string      `json:"rule"`
	File       string      `json:"file,omitempty"`
	Line       int64       `json:"line,omitempty"`
	Column     string      `json:"column,omitempty"`
	Observed   string      `json:"observed"`
	Allowed    string      `json:"allowed"`
	Message    string      `json:"message"`
	Read       bool        `json:"read"` // false: rejected before reading; release is refused
	Violations []Violation `json:"violations"`
	Time       time.Time   `json:"time"`
	Release    string      `json:"release"`
}

func reasonOf(d storage.Dataset, rep Report) *Reason {
	if len(rep.Violations) == 0 {
		return nil
	}
	v := rep.Violations[0]
	r := &Reason{Dataset: d.ID, Pipeline: d.Pipeline, Kind: string(d.Kind), Rule: v.Rule, File: v.File, Line: v.Line,
		Column: v.Column, Observed: v.Observed, Allowed: v.Allowed, Message: v.String(), Violations: rep.Violations,
		Time: d.Created, Read: hasContent(d)}
	if r.Read {
		r.Release = "kiln datasets release " + d.ID
	} else {
		r.Release = "not possible: the batch was rejected before it was read; fix it and drop it again"
	}
	return r
}

// moveToQuarantine moves the batch (file or folder) to quarantine/<p>/<dN>/<name> beside
// its REASON.json, written first so a batch there always says why.
func (m *Manager) moveToQuarantine(d storage.Dataset, root, name string, reason *Reason) error {
	qdir := filepath.Join(m.opt.QuarantineDir, d.ID)
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return err
	}
	if reason != nil {
		b, err := json.MarshalIndent(reason, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFileSync(filepath.Join(qdir, "REASON.json"), append(b, '\n')); err != nil {
			return err
		}
	}
	if err := os.Rename(root, filepath.Join(qdir, name)); err != nil {
		return err
	}
	for _, dir := range []string{qdir, filepath.Dir(root), filepath.Dir(qdir)} {
		_ = syncDir(dir) // durability of the move; the record is already durable
	}
	return nil
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
