package ingest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/kiln-edge/kiln/storage"
)

// MetaName is the Files entry of a dataset record that holds its manifest and validation
// report (one JSON blob). Names starting with a dot are never ingested from a drop folder, so
// it cannot collide with a dropped file; it is listed in Files so the blob is referenced (and
// kept by GC) exactly as long as the record.
const MetaName = ".kiln-dataset.json"

// BlobOpener is what reading a dataset back needs of the store (storage.Store has it).
type BlobOpener interface {
	OpenBlob(ref storage.BlobRef) (*os.File, error)
}

var _ BlobOpener = (*storage.Store)(nil)

// Meta is the blob MetaName names.
type Meta struct {
	V        int       `json:"v"`
	Manifest *Manifest `json:"manifest,omitempty"` // nil when the batch was rejected unread
	Report   Report    `json:"report"`
}

// Manifest describes a dataset version's content; the record's Digest is the sha256 of its
// JSON encoding, so equal content and split give equal digests.
type Manifest struct {
	Format string `json:"format"`
	// Feedback is a feedback version's type (storage.FeedbackRows, ...); Source the labels
	// version a joined one was made from. Both empty for data, so data digests are as before.
	Feedback string                   `json:"feedback,omitempty"`
	Source   string                   `json:"source,omitempty"`
	Files    []ManifestFile           `json:"files"`
	Parts    []Part                   `json:"parts,omitempty"`
	Rows     int64                    `json:"rows"`
	Label    string                   `json:"label,omitempty"`
	Schema   []Column                 `json:"schema,omitempty"`
	Split    *Split                   `json:"split,omitempty"`
	Profile  map[string]ColumnProfile `json:"profile,omitempty"`
	// Classes counts an images version's images per class.
	Classes map[string]int64 `json:"classes,omitempty"`
}

// ManifestFile is one dropped file, by its path inside the batch.
type ManifestFile struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Part is the train or holdout part of a version: a CSV (with the header) or JSONL blob; or
// the labels part of a late-labels version (CSV request_id,label, Files entry LabelsName).
// An images version's parts have no blob of their own (Digest empty): they are its images
// (Files with Holdout false or true), Rows their count and Size their bytes.
type Part struct {
	Name   string `json:"name"` // train | holdout | labels
	Digest string `json:"digest,omitempty"`
	Size   int64  `json:"size"`
	Rows   int64  `json:"rows"` // images: images
}

// Split is how rows were split: a row goes to holdout when xxh64(row, seed) / 2^64 < fraction.
type Split struct {
	Fraction float64 `json:"fraction"`
	Seed     int64   `json:"seed"`
}

// Check is one rule's outcome in a validation report.
type Check struct {
	Rule     string `json:"rule"`
	OK       bool   `json:"ok"`
	Observed string `json:"observed,omitempty"`
	Allowed  string `json:"allowed,omitempty"`
}

// Report is a batch's validation report.
type Report struct {
	OK         bool                    `json:"ok"`
	Checks     []Check                 `json:"checks,omitempty"`
	Violations []Violation             `json:"violations,omitempty"`
	Drift      map[string]FeatureDrift `json:"drift,omitempty"`
	Reference  string                  `json:"reference,omitempty"` // what drift and schema were checked against
	// Feedback counts a feedback version's rows; LeftOut is the first row left out under
	// each rule (with its count): bad rows of feedback are reported, never dropped silently,
	// and quarantine the batch only when no row is usable.
	Feedback *FeedbackCounts `json:"feedback,omitempty"`
	LeftOut  []Violation     `json:"left_out,omitempty"`
}

// ReadMeta reads a dataset's manifest and report from the blob store.
func ReadMeta(s BlobOpener, d storage.Dataset) (*Meta, error) {
	for _, f := range d.Files {
		if f.Path != MetaName {
			continue
		}
		r, err := s.OpenBlob(f.Blob)
		if err != nil {
			return nil, fmt.Errorf("dataset %s meta: %w", d.ID, err)
		}
		defer func() { _ = r.Close() }() // read-only
		var m Meta
		if err := json.NewDecoder(io.LimitReader(r, 256<<20)).Decode(&m); err != nil {
			return nil, fmt.Errorf("dataset %s meta: %w", d.ID, err)
		}
		return &m, nil
	}
	return nil, fmt.Errorf("dataset %s has no %s: %w", d.ID, MetaName, storage.ErrNotFound)
}

// DataFiles are a record's dropped files: without the meta entry and the labels part.
func DataFiles(d storage.Dataset) []storage.FileRef {
	out := make([]storage.FileRef, 0, len(d.Files))
	for _, f := range d.Files {
		if f.Path != MetaName && f.Path != LabelsName {
			out = append(out, f)
		}
	}
	return out
}

// hasContent reports whether a batch was read (it has files or parts): one rejected
// unread has only its meta, and cannot be released.
func hasContent(d storage.Dataset) bool {
	return len(DataFiles(d)) > 0 || d.Train != nil || d.Holdout != nil
}

// admitted reports whether a dataset counts as data: accepted, or released by a person.
func admitted(d storage.Dataset) bool {
	return d.State == storage.DatasetAccepted || d.State == storage.DatasetReleased
}

type pk struct {
	pipeline string
	kind     storage.DatasetKind
}

type dk struct {
	pk
	digest string
}

// index is what ingest remembers of the store between batches: which content each pipeline
// already has (duplicates), the newest admitted schema per pipeline and kind, and the drift
// references. It is loaded once at start and kept in step with each commit.
type index struct {
	mu       sync.Mutex
	digests  map[dk]string // content -> the dataset holding it
	inflight map[dk]bool   // content being committed right now
	latest   map[pk]storage.Dataset
	schemas  map[string][]Column // dataset ID -> schema, for latest

	refMu sync.Mutex
	all   map[string]*builtRef // pipeline -> the admitted data versions so far
	live  map[string]*builtRef // pipeline -> the live model's window
}

type builtRef struct {
	key    string
	ref    *refProfile
	folded map[string]bool
}

func newIndex() *index {
	return &index{
		digests: map[dk]string{}, inflight: map[dk]bool{}, latest: map[pk]storage.Dataset{},
		schemas: map[string][]Column{}, all: map[string]*builtRef{}, live: map[string]*builtRef{},
	}
}

func (x *index) load(s Store) error {
	var ds []storage.Dataset
	if err := s.View(func(tx *storage.Tx) error {
		var err error
		ds, err = tx.Datasets("")
		return err
	}); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, d := range ds {
		x.addLocked(d)
	}
	return nil
}

func (x *index) addLocked(d storage.Dataset) {
	k := pk{d.Pipeline, d.Kind}
	for _, f := range DataFiles(d) {
		x.digests[dk{k, f.Blob.Digest}] = d.ID
	}
	if admitted(d) {
		if cur, ok := x.latest[k]; !ok || idNumber(d.ID) > idNumber(cur.ID) {
			x.latest[k] = d
		}
	}
}

func idNumber(id string) uint64 {
	_, _, n, _ := storage.ParseID(id)
	return n
}

// claim reserves a batch's content. It returns the dataset already holding all of it (a
// duplicate), or busy when another worker is committing some of it right now.
func (x *index) claim(p string, kind storage.DatasetKind, digests []string) (dup string, busy bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := pk{p, kind}
	for _, d := range digests {
		if x.inflight[dk{k, d}] {
			return "", true
		}
	}
	if len(digests) > 0 {
		dup = x.digests[dk{k, digests[0]}]
		for _, d := range digests[1:] {
			if dup != "" && x.digests[dk{k, d}] != dup {
				dup = ""
			}
		}
	}
	if dup != "" {
		return dup, false
	}
	for _, d := range digests {
		x.inflight[dk{k, d}] = true
	}
	return "", false
}

// settle ends a claim: with the committed record, or none when the commit failed.
func (x *index) settle(p string, kind storage.DatasetKind, digests []string, d *storage.Dataset) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := pk{p, kind}
	for _, dg := range digests {
		delete(x.inflight, dk{k, dg})
	}
	if d != nil {
		x.addLocked(*d)
	}
}

func (x *index) admit(d storage.Dataset) {
	x.mu.Lock()
	x.addLocked(d)
	x.mu.Unlock()
}

// schema is the newest admitted schema of a pipeline and kind, and the dataset it is from.
func (x *index) schema(s Store, p string, kind storage.DatasetKind) ([]Column, string, error) {
	x.mu.Lock()
	d, ok := x.latest[pk{p, kind}]
	cols, cached := x.schemas[d.ID]
	x.mu.Unlock()
	if !ok {
		return nil, "", nil
	}
	if cached {
		return cols, d.ID, nil
	}
	m, err := ReadMeta(s, d)
	if err != nil {
		return nil, "", err
	}
	if m.Manifest != nil {
		cols = m.Manifest.Schema
	}
	x.mu.Lock()
	x.schemas[d.ID] = cols
	x.mu.Unlock()
	return cols, d.ID, nil
}

// reference is the drift reference of a pipeline: the live model's data window when there is
// a live model, else every admitted data version so far.
func (x *index) reference(s Store, p string) (*refProfile, string, error) {
	var window []string
	var model string
	if err := s.View(func(tx *storage.Tx) error {
		ms, err := tx.Models(p)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.State != storage.ModelLive {
				continue
			}
			r, err := tx.Run(m.Run)
			if err != nil {
				return err
			}
			model, window = m.ID, r.Datasets
		}
		return nil
	}); err != nil {
		return nil, "", err
	}
	x.refMu.Lock()
	defer x.refMu.Unlock()
	if model != "" {
		b := x.live[p]
		if b == nil || b.key != model {
			b = &builtRef{key: model, ref: newRefProfile(), folded: map[string]bool{}}
			for _, id := range window {
				if err := x.foldID(s, b, id); err != nil {
					return nil, "", err
				}
			}
			x.live[p] = b
		}
		return b.ref, fmt.Sprintf("the data window of live model %s (%d versions)", model, b.ref.versions), nil
	}
	b := x.all[p]
	if b == nil {
		b = &builtRef{ref: newRefProfile(), folded: map[string]bool{}}
		var ds []storage.Dataset
		if err := s.View(func(tx *storage.Tx) error {
			var err error
			ds, err = tx.Datasets(p)
			return err
		}); err != nil {
			return nil, "", err
		}
		for _, d := range ds {
			if d.Kind == storage.KindData && admitted(d) {
				if err := x.fold(s, b, d); err != nil {
					return nil, "", err
				}
			}
		}
		x.all[p] = b
	}
	return b.ref, fmt.Sprintf("the %d admitted versions so far (no live model yet)", b.ref.versions), nil
}

func (x *index) foldID(s Store, b *builtRef, id string) error {
	var d storage.Dataset
	if err := s.View(func(tx *storage.Tx) error {
		var err error
		d, err = tx.Dataset(id)
		return err
	}); err != nil {
		return err
	}
	return x.fold(s, b, d)
}

func (x *index) fold(s Store, b *builtRef, d storage.Dataset) error {
	if b.folded[d.ID] || d.Kind != storage.KindData {
		return nil
	}
	m, err := ReadMeta(s, d)
	if err != nil {
		return err
	}
	b.folded[d.ID] = true
	if m.Manifest != nil && len(m.Manifest.Profile) > 0 {
		b.ref.add(m.Manifest.Profile, xxh64([]byte(d.Digest), 0))
	}
	return nil
}

// admitted folds a newly admitted version into the "so far" reference, when it is built.
func (x *index) foldAdmitted(d storage.Dataset, m *Manifest) {
	if d.Kind != storage.KindData || m == nil {
		return
	}
	x.refMu.Lock()
	defer x.refMu.Unlock()
	if b := x.all[d.Pipeline]; b != nil && !b.folded[d.ID] {
		b.folded[d.ID] = true
		if len(m.Profile) > 0 {
			b.ref.add(m.Profile, xxh64([]byte(d.Digest), 0))
		}
	}
}
