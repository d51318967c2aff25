package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recordV is the encoding version of every record value.
const recordV = 1

var pipelineRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// ValidPipeline reports whether name is a legal pipeline name.
func ValidPipeline(name string) bool { return pipelineRE.MatchString(name) }

// ID letters of the short per-pipeline IDs: iris/d12, iris/r9, iris/m7, iris/e3.
const (
	LetterDataset    = 'd'
	LetterRun        = 'r'
	LetterModel      = 'm'
	LetterDeployment = 'e'
)

// ParseID splits "iris/m7" into ("iris", 'm', 7).
func ParseID(id string) (pipeline string, letter byte, n uint64, err error) {
	p, rest, ok := strings.Cut(id, "/")
	if !ok || !ValidPipeline(p) || len(rest) < 2 {
		return "", 0, 0, fmt.Errorf("id %q: want pipeline/<letter><number>: %w", id, ErrInvalid)
	}
	n, err = strconv.ParseUint(rest[1:], 10, 64)
	if err != nil || n == 0 || rest[1] == '0' {
		return "", 0, 0, fmt.Errorf("id %q: bad number: %w", id, ErrInvalid)
	}
	return p, rest[0], n, nil
}

func formatID(pipeline string, letter byte, n uint64) string {
	return pipeline + "/" + string(letter) + strconv.FormatUint(n, 10)
}

// States of DESIGN.md "Words".
type (
	DatasetKind  string
	DatasetState string
	RunState     string
	ModelState   string
	DeployState  string
)

const (
	KindData     DatasetKind = "data"
	KindFeedback DatasetKind = "feedback"

	DatasetAccepted    DatasetState = "accepted"
	DatasetQuarantined DatasetState = "quarantined"
	DatasetReleased    DatasetState = "released"
	DatasetExpired     DatasetState = "expired" // quarantined past its age; files gone

	RunQueued    RunState = "queued"
	RunRunning   RunState = "running"
	RunSucceeded RunState = "succeeded"
	RunFailed    RunState = "failed"
	RunCancelled RunState = "cancelled"

	ModelCandidate  ModelState = "candidate"
	ModelEvaluating ModelState = "evaluating"
	ModelRejected   ModelState = "rejected"
	ModelLive       ModelState = "live"
	ModelStandby    ModelState = "standby"
	ModelRetired    ModelState = "retired"
	ModelRolledBack ModelState = "rolled_back"

	DeployLive    DeployState = "live"
	DeployStandby DeployState = "standby"
	DeployEnded   DeployState = "ended"
)

// BlobRef names a blob: "sha256:<hex>" and its size.
type BlobRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// FileRef is one named file of a dataset or model manifest. The files of an
// images version are its parts: each carries its label and which part it
// is in (train, or holdout by stable content hash), so the parts are
// manifests of the same blobs and nothing is stored twice.
type FileRef struct {
	Path    string  `json:"path"`
	Blob    BlobRef `json:"blob"`
	Label   string  `json:"label,omitempty"`   // images: the class
	Holdout bool    `json:"holdout,omitempty"` // images: in the holdout part
}

// Dataset is a batch: an accepted (or quarantined, then released) dataset
// version of kind data or feedback, with its train and holdout parts.
type Dataset struct {
	ID       string      `json:"id"`
	Pipeline string      `json:"pipeline"`
	Kind     DatasetKind `json:"kind"`
	// Feedback is what a feedback version holds: FeedbackRows, FeedbackLabels
	// or FeedbackJoined (empty for data).
	Feedback string `json:"feedback,omitempty"`
	// Source is the labels version a joined version was made from.
	Source string       `json:"source,omitempty"`
	State  DatasetState `json:"state"`
	// Format is the data format the version was read as (csv, jsonl,
	// images, files): its parts keep it when the spec changes later.
	Format   string    `json:"format,omitempty"`
	Digest   string    `json:"digest,omitempty"` // sha256 of the manifest
	Rows     int64     `json:"rows,omitempty"`
	Files    []FileRef `json:"files,omitempty"`
	Train    *BlobRef  `json:"train,omitempty"`
	Holdout  *BlobRef  `json:"holdout,omitempty"`
	Reason   string    `json:"reason,omitempty"` // why quarantined
	Released string    `json:"released_by,omitempty"`
	// Suspect names the rolled-back model whose training window held this
	// data version and the restored model's did not: such a version leaves
	// training windows until a person releases it (kiln datasets release).
	Suspect string    `json:"suspect,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Format values of Dataset.Format beyond the spec's csv and jsonl.
const (
	FormatImages = "images"
	FormatFiles  = "files"
)

// HasTrainPart reports whether the version holds anything to train on: a
// train part (csv, jsonl) or labelled images outside the holdout.
func (d *Dataset) HasTrainPart() bool {
	if d.Train != nil {
		return true
	}
	return d.Format == FormatImages && slices.ContainsFunc(d.Files, func(f FileRef) bool { return f.Label != "" && !f.Holdout })
}

// HasHoldoutPart is HasTrainPart for the holdout part.
func (d *Dataset) HasHoldoutPart() bool {
	if d.Holdout != nil {
		return true
	}
	return d.Format == FormatImages && slices.ContainsFunc(d.Files, func(f FileRef) bool { return f.Label != "" && f.Holdout })
}

// Run is one training container execution.
type Run struct {
	ID        string            `json:"id"`
	Pipeline  string            `json:"pipeline"`
	State     RunState          `json:"state"`
	Reason    string            `json:"reason,omitempty"`
	Datasets  []string          `json:"datasets"`        // the window trained on
	Image     string            `json:"image,omitempty"` // training image digest
	GPU       string            `json:"gpu,omitempty"`   // leased GPU UUID
	Container string            `json:"container,omitempty"`
	LogPath   string            `json:"log_path,omitempty"`
	LogGone   bool              `json:"log_gone,omitempty"` // expired by GC
	Labels    map[string]string `json:"labels,omitempty"`
	Created   time.Time         `json:"created"`
	Started   time.Time         `json:"started,omitzero"`
	Finished  time.Time         `json:"finished,omitzero"`
	Updated   time.Time         `json:"updated"`
}

// Model is a run's /opt/ml/model output as a manifest of blobs, with metrics.
type Model struct {
	ID         string             `json:"id"`
	Pipeline   string             `json:"pipeline"`
	Run        string             `json:"run"`
	State      ModelState         `json:"state"`
	Files      []FileRef          `json:"files,omitempty"`
	ServeImage string             `json:"serve_image,omitempty"` // digest
	Metrics    map[string]float64 `json:"metrics,omitempty"`     // measured by kilnd
	Trainer    map[string]float64 `json:"trainer_metrics,omitempty"`
	Reason     string             `json:"reason,omitempty"` // the gate's verdict, or why it left live
	Pruned     bool               `json:"pruned,omitempty"` // files released by GC; record kept for history
	Created    time.Time          `json:"created"`
	Updated    time.Time          `json:"updated"`
}

// Deployment is a model serving behind a pipeline's endpoint.
type Deployment struct {
	ID       string      `json:"id"`
	Pipeline string      `json:"pipeline"`
	Model    string      `json:"model"`
	State    DeployState `json:"state"`
	Previous string      `json:"previous,omitempty"` // deployment this one replaced
	Rollback bool        `json:"rollback,omitempty"` // created by a rollback from Previous
	Created  time.Time   `json:"created"`
	Updated  time.Time   `json:"updated"`
}

// Lease is a GPU leased to one run.
type Lease struct {
	GPU      string    `json:"gpu"` // UUID
	Run      string    `json:"run"`
	Pipeline string    `json:"pipeline"`
	Created  time.Time `json:"created"`
}

// Cordon keeps a GPU from placement until a person lifts it. A fatal GPU
// fault cordons the GPU; so may an operator.
type Cordon struct {
	GPU     string    `json:"gpu"` // UUID
	Reason  string    `json:"reason"`
	Actor   string    `json:"actor"` // "kilnd" or "uid:N"
	Created time.Time `json:"created"`
}

// Pin holds a pipeline on one model and turns its automation off: no
// automatic promotion or rollback until a person unpins it.
type Pin struct {
	Pipeline string    `json:"pipeline"`
	Model    string    `json:"model"`
	Actor    string    `json:"actor"`
	Created  time.Time `json:"created"`
}

type record interface {
	recID() string
	blobs() []BlobRef
}

func (d *Dataset) recID() string    { return d.ID }
func (r *Run) recID() string        { return r.ID }
func (m *Model) recID() string      { return m.ID }
func (d *Deployment) recID() string { return d.ID }
func (r *Run) blobs() []BlobRef     { return nil }
func (d *Deployment) blobs() []BlobRef {
	return nil
}

func (d *Dataset) blobs() []BlobRef {
	if d.State == DatasetExpired {
		return nil
	}
	var out []BlobRef
	for _, f := range d.Files {
		out = append(out, f.Blob)
	}
	for _, b := range []*BlobRef{d.Train, d.Holdout} {
		if b != nil {
			out = append(out, *b)
		}
	}
	return out
}

func (m *Model) blobs() []BlobRef {
	if m.Pruned {
		return nil
	}
	var out []BlobRef
	for _, f := range m.Files {
		out = append(out, f.Blob)
	}
	return out
}

// kind describes one record bucket.
type kind struct {
	name   string
	bucket []byte
	letter byte
	decode func([]byte) (record, error)
}

var (
	kindDataset = &kind{"dataset", bucketDatasets, LetterDataset, func(b []byte) (record, error) {
		var d Dataset
		return &d, decodeRecord(b, &d)
	}}
	kindRun = &kind{"run", bucketRuns, LetterRun, func(b []byte) (record, error) {
		var r Run
		return &r, decodeRecord(b, &r)
	}}
	kindModel = &kind{"model", bucketModels, LetterModel, func(b []byte) (record, error) {
		var m Model
		return &m, decodeRecord(b, &m)
	}}
	kindDeploy = &kind{"deployment", bucketDeploys, LetterDeployment, func(b []byte) (record, error) {
		var d Deployment
		return &d, decodeRecord(b, &d)
	}}
)

func decodeRecord(b []byte, v any) error {
	var hdr struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &hdr); err != nil {
		return err
	}
	if hdr.V != recordV {
		return fmt.Errorf("record encoding v%d unknown (this kilnd knows v%d): %w", hdr.V, recordV, ErrInvalid)
	}
	return json.Unmarshal(b, v)
}

func encodeRecord(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// Prepend the version field: {"v":1,...}
	out := make([]byte, 0, len(b)+7)
	out = append(out, `{"v":1`...)
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...), nil
}

func recordKey(pipeline string, n uint64) []byte {
	k := make([]byte, 0, len(pipeline)+9)
	k = append(k, pipeline...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, n)
}

func (tx *Tx) nextID(pipeline string, letter byte) (string, uint64, error) {
	if !ValidPipeline(pipeline) {
		return "", 0, fmt.Errorf("pipeline %q: want [a-z0-9-]{1,32}: %w", pipeline, ErrInvalid)
	}
	b := tx.btx.Bucket(bucketSeqs)
	k := []byte(pipeline + "/" + string(letter))
	var n uint64
	if v := b.Get(k); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	if err := b.Put(k, u64(n)); err != nil {
		return "", 0, err
	}
	return formatID(pipeline, letter, n), n, nil
}

func getRec[T any, P interface {
	*T
	record
}](btx *bolt.Tx, k *kind, id string) (T, error) {
	var zero T
	p, letter, n, err := ParseID(id)
	if err != nil {
		return zero, err
	}
	if letter != k.letter {
		return zero, fmt.Errorf("%s %s: not a %s id: %w", k.name, id, k.name, ErrInvalid)
	}
	v := btx.Bucket(k.bucket).Get(recordKey(p, n))
	if v == nil {
		return zero, fmt.Errorf("%s %s: %w", k.name, id, ErrNotFound)
	}
	var out T
	if err := decodeRecord(v, P(&out)); err != nil {
		return zero, fmt.Errorf("%s %s: %w", k.name, id, err)
	}
	return out, nil
}

func listRec[T any, P interface {
	*T
	record
}](btx *bolt.Tx, k *kind, pipeline string) ([]T, error) {
	var out []T
	c := btx.Bucket(k.bucket).Cursor()
	var prefix []byte
	if pipeline != "" {
		prefix = []byte(pipeline + "/")
	}
	for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
		var r T
		if err := decodeRecord(v, P(&r)); err != nil {
			return nil, fmt.Errorf("%s under %q: %w", k.name, key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// putRec writes rec (whose ID is set) and keeps blobrefs in step with the
// blobs it names. create demands the key be new; otherwise it must exist.
func (tx *Tx) putRec(k *kind, rec record, create bool) error {
	if err := tx.writable(); err != nil {
		return err
	}
	id := rec.recID()
	p, letter, n, err := ParseID(id)
	if err != nil {
		return err
	}
	if letter != k.letter {
		return fmt.Errorf("%s %s: not a %s id: %w", k.name, id, k.name, ErrInvalid)
	}
	b := tx.btx.Bucket(k.bucket)
	key := recordKey(p, n)
	old := b.Get(key)
	switch {
	case create && old != nil:
		return fmt.Errorf("%s %s: %w", k.name, id, ErrExists)
	case !create && old == nil:
		return fmt.Errorf("%s %s: %w", k.name, id, ErrNotFound)
	}
	refs := tx.btx.Bucket(bucketBlobRefs)
	if old != nil {
		o, err := k.decode(old)
		if err != nil {
			return fmt.Errorf("%s %s: %w", k.name, id, err)
		}
		for _, bl := range o.blobs() {
			if err := refs.Delete(refKey(bl.Digest, id)); err != nil {
				return err
			}
		}
	}
	for _, bl := range rec.blobs() {
		if !validDigest(bl.Digest) || bl.Size < 0 {
			return fmt.Errorf("%s %s: blob %q: %w", k.name, id, bl.Digest, ErrInvalid)
		}
		if err := refs.Put(refKey(bl.Digest, id), u64(uint64(bl.Size))); err != nil {
			return err
		}
	}
	v, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("%s %s: %w", k.name, id, err)
	}
	return b.Put(key, v)
}

func (tx *Tx) stamp(created, updated *time.Time) {
	now := tx.s.now().UTC().Round(0)
	if created.IsZero() {
		*created = now
	}
	*updated = now
}

// Store-level reads, each in its own read transaction.

// Dataset reads one dataset.
func (s *Store) Dataset(id string) (d Dataset, err error) {
	err = s.View(func(tx *Tx) error { d, err = tx.Dataset(id); return err })
	return d, err
}

// Run reads one run.
func (s *Store) Run(id string) (r Run, err error) {
	err = s.View(func(tx *Tx) error { r, err = tx.Run(id); return err })
	return r, err
}

// Model reads one model.
func (s *Store) Model(id string) (m Model, err error) {
	err = s.View(func(tx *Tx) error { m, err = tx.Model(id); return err })
	return m, err
}

// Deployment reads one deployment.
func (s *Store) Deployment(id string) (d Deployment, err error) {
	err = s.View(func(tx *Tx) error { d, err = tx.Deployment(id); return err })
	return d, err
}
