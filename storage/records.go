package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
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

// FileRef is one named file of a dataset or model manifest.
type FileRef struct {
	Path string  `json:"path"`
	Blob BlobRef `json:"blob"`
}

// Dataset is a batch: an accepted (or quarantined, then released) dataset
// version of kind data or feedback, with its train and holdout parts.
type Dataset struct {
	ID       string       `json:"id"`
	Pipeline string       `json:"pipeline"`
	Kind     DatasetKind  `json:"kind"`
	State    DatasetState `json:"state"`
	Digest   string       `json:"digest,omitempty"` // sha256 of the manifest
	Rows     int64        `json:"rows,omitempty"`
	Files    []FileRef    `json:"files,omitempty"`
	Train    *BlobRef     `json:"train,omitempty"`
	Holdout  *BlobRef     `json:"holdout,omitempty"`
	Reason   string       `json:"reason,omitempty"` // why quarantined
	Released string       `json:"released_by,omitempty"`
	Created  time.Time    `json:"created"`
	Updated  time.Time    `json:"updated"`
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

// CreateDataset assigns d a new ID in its pipeline and stores it.
func (tx *Tx) CreateDataset(d Dataset) (Dataset, error) {
	if d.Kind != KindData && d.Kind != KindFeedback {
		return Dataset{}, fmt.Errorf("dataset kind %q: %w", d.Kind, ErrInvalid)
	}
	if !oneOf(d.State, DatasetAccepted, DatasetQuarantined) {
		return Dataset{}, fmt.Errorf("new dataset state %q: want accepted or quarantined: %w", d.State, ErrInvalid)
	}
	id, _, err := tx.nextID(d.Pipeline, LetterDataset)
	if err != nil {
		return Dataset{}, err
	}
	d.ID = id
	tx.stamp(&d.Created, &d.Updated)
	return d, tx.putRec(kindDataset, &d, true)
}

// PutDataset rewrites an existing dataset (a state change, a release).
func (tx *Tx) PutDataset(d Dataset) error {
	if !oneOf(d.State, DatasetAccepted, DatasetQuarantined, DatasetReleased, DatasetExpired) {
		return fmt.Errorf("dataset %s state %q: %w", d.ID, d.State, ErrInvalid)
	}
	tx.stamp(&d.Created, &d.Updated)
	return tx.putRec(kindDataset, &d, false)
}

// Dataset reads one dataset.
func (tx *Tx) Dataset(id string) (Dataset, error) { return getRec[Dataset](tx.btx, kindDataset, id) }

// Datasets lists a pipeline's datasets in ID order ("" lists all).
func (tx *Tx) Datasets(pipeline string) ([]Dataset, error) {
	return listRec[Dataset](tx.btx, kindDataset, pipeline)
}

// CreateRun assigns r a new ID, stores it and links each dataset of its
// window to it (EdgeTrainedOn).
func (tx *Tx) CreateRun(r Run) (Run, error) {
	if r.State == "" {
		r.State = RunQueued
	}
	if !validRunState(r.State) {
		return Run{}, fmt.Errorf("run state %q: %w", r.State, ErrInvalid)
	}
	id, _, err := tx.nextID(r.Pipeline, LetterRun)
	if err != nil {
		return Run{}, err
	}
	r.ID = id
	tx.stamp(&r.Created, &r.Updated)
	if err := tx.putRec(kindRun, &r, true); err != nil {
		return Run{}, err
	}
	for _, d := range r.Datasets {
		if err := tx.Link(d, r.ID, EdgeTrainedOn); err != nil {
			return Run{}, err
		}
	}
	if r.GPU != "" {
		if err := tx.Link("gpu:"+r.GPU, r.ID, EdgeRanOn); err != nil {
			return Run{}, err
		}
	}
	return r, nil
}

// PutRun rewrites an existing run (state, reason, container, times).
func (tx *Tx) PutRun(r Run) error {
	if !validRunState(r.State) {
		return fmt.Errorf("run %s state %q: %w", r.ID, r.State, ErrInvalid)
	}
	tx.stamp(&r.Created, &r.Updated)
	return tx.putRec(kindRun, &r, false)
}

// Run reads one run.
func (tx *Tx) Run(id string) (Run, error) { return getRec[Run](tx.btx, kindRun, id) }

// Runs lists a pipeline's runs in ID order ("" lists all).
func (tx *Tx) Runs(pipeline string) ([]Run, error) { return listRec[Run](tx.btx, kindRun, pipeline) }

// CreateModel assigns m a new ID, stores it and links its run to it.
func (tx *Tx) CreateModel(m Model) (Model, error) {
	if m.State == "" {
		m.State = ModelCandidate
	}
	if !validModelState(m.State) {
		return Model{}, fmt.Errorf("model state %q: %w", m.State, ErrInvalid)
	}
	if m.Run == "" {
		return Model{}, fmt.Errorf("model without a run: %w", ErrInvalid)
	}
	if _, err := tx.Run(m.Run); err != nil {
		return Model{}, fmt.Errorf("model's run: %w", err)
	}
	id, _, err := tx.nextID(m.Pipeline, LetterModel)
	if err != nil {
		return Model{}, err
	}
	m.ID = id
	tx.stamp(&m.Created, &m.Updated)
	if err := tx.putRec(kindModel, &m, true); err != nil {
		return Model{}, err
	}
	return m, tx.Link(m.Run, m.ID, EdgeProduced)
}

// PutModel rewrites an existing model (state, metrics).
func (tx *Tx) PutModel(m Model) error {
	if !validModelState(m.State) {
		return fmt.Errorf("model %s state %q: %w", m.ID, m.State, ErrInvalid)
	}
	tx.stamp(&m.Created, &m.Updated)
	return tx.putRec(kindModel, &m, false)
}

// Model reads one model.
func (tx *Tx) Model(id string) (Model, error) { return getRec[Model](tx.btx, kindModel, id) }

// Models lists a pipeline's models in ID order ("" lists all).
func (tx *Tx) Models(pipeline string) ([]Model, error) {
	return listRec[Model](tx.btx, kindModel, pipeline)
}

// CreateDeployment assigns d a new ID, stores it and links its model to it
// and, if it replaced one, the previous deployment to it (EdgeRollback when
// d.Rollback, else EdgeReplaced).
func (tx *Tx) CreateDeployment(d Deployment) (Deployment, error) {
	if d.State == "" {
		d.State = DeployLive
	}
	if !oneOf(d.State, DeployLive, DeployStandby, DeployEnded) {
		return Deployment{}, fmt.Errorf("deployment state %q: %w", d.State, ErrInvalid)
	}
	if _, err := tx.Model(d.Model); err != nil {
		return Deployment{}, fmt.Errorf("deployment's model: %w", err)
	}
	id, _, err := tx.nextID(d.Pipeline, LetterDeployment)
	if err != nil {
		return Deployment{}, err
	}
	d.ID = id
	tx.stamp(&d.Created, &d.Updated)
	if err := tx.putRec(kindDeploy, &d, true); err != nil {
		return Deployment{}, err
	}
	if err := tx.Link(d.Model, d.ID, EdgeDeployed); err != nil {
		return Deployment{}, err
	}
	if d.Previous != "" {
		t := EdgeReplaced
		if d.Rollback {
			t = EdgeRollback
		}
		if err := tx.Link(d.Previous, d.ID, t); err != nil {
			return Deployment{}, err
		}
	}
	return d, nil
}

// PutDeployment rewrites an existing deployment (its state).
func (tx *Tx) PutDeployment(d Deployment) error {
	if !oneOf(d.State, DeployLive, DeployStandby, DeployEnded) {
		return fmt.Errorf("deployment %s state %q: %w", d.ID, d.State, ErrInvalid)
	}
	tx.stamp(&d.Created, &d.Updated)
	return tx.putRec(kindDeploy, &d, false)
}

// Deployment reads one deployment.
func (tx *Tx) Deployment(id string) (Deployment, error) {
	return getRec[Deployment](tx.btx, kindDeploy, id)
}

// Deployments lists a pipeline's deployments in ID order ("" lists all).
func (tx *Tx) Deployments(pipeline string) ([]Deployment, error) {
	return listRec[Deployment](tx.btx, kindDeploy, pipeline)
}

// PutLease records that GPU uuid is leased to l.Run; a GPU holds one lease.
func (tx *Tx) PutLease(l Lease) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if l.GPU == "" || l.Run == "" {
		return fmt.Errorf("lease %+v: gpu and run are required: %w", l, ErrInvalid)
	}
	b := tx.btx.Bucket(bucketLeases)
	if old := b.Get([]byte(l.GPU)); old != nil {
		var o Lease
		if err := decodeRecord(old, &o); err == nil && o.Run != l.Run {
			return fmt.Errorf("lease gpu %s: held by %s: %w", l.GPU, o.Run, ErrExists)
		}
	}
	if l.Created.IsZero() {
		l.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(l)
	if err != nil {
		return err
	}
	return b.Put([]byte(l.GPU), v)
}

// ReleaseLease removes the lease on GPU uuid, if any.
func (tx *Tx) ReleaseLease(gpu string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	return tx.btx.Bucket(bucketLeases).Delete([]byte(gpu))
}

// Leases lists current GPU leases by GPU UUID.
func (tx *Tx) Leases() ([]Lease, error) {
	var out []Lease
	err := tx.btx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
		var l Lease
		if err := decodeRecord(v, &l); err != nil {
			return fmt.Errorf("lease %s: %w", k, err)
		}
		out = append(out, l)
		return nil
	})
	return out, err
}

// PutCordon cordons GPU c.GPU (replacing an earlier reason).
func (tx *Tx) PutCordon(c Cordon) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if c.GPU == "" || c.Reason == "" {
		return fmt.Errorf("cordon %+v: gpu and reason are required: %w", c, ErrInvalid)
	}
	if c.Created.IsZero() {
		c.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(c)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketCordons).Put([]byte(c.GPU), v)
}

// DeleteCordon lifts the cordon on GPU uuid; ErrNotFound when there is none.
func (tx *Tx) DeleteCordon(gpu string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	b := tx.btx.Bucket(bucketCordons)
	if b.Get([]byte(gpu)) == nil {
		return fmt.Errorf("gpu %s is not cordoned: %w", gpu, ErrNotFound)
	}
	return b.Delete([]byte(gpu))
}

// Cordons lists cordoned GPUs by UUID.
func (tx *Tx) Cordons() ([]Cordon, error) {
	var out []Cordon
	err := tx.btx.Bucket(bucketCordons).ForEach(func(k, v []byte) error {
		var c Cordon
		if err := decodeRecord(v, &c); err != nil {
			return fmt.Errorf("cordon %s: %w", k, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// PutPin pins p.Pipeline to p.Model.
func (tx *Tx) PutPin(p Pin) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if !ValidPipeline(p.Pipeline) || p.Model == "" {
		return fmt.Errorf("pin %+v: pipeline and model are required: %w", p, ErrInvalid)
	}
	if p.Created.IsZero() {
		p.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(p)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketPins).Put([]byte(p.Pipeline), v)
}

// DeletePin unpins a pipeline; ErrNotFound when it is not pinned.
func (tx *Tx) DeletePin(pipeline string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	b := tx.btx.Bucket(bucketPins)
	if b.Get([]byte(pipeline)) == nil {
		return fmt.Errorf("pipeline %s is not pinned: %w", pipeline, ErrNotFound)
	}
	return b.Delete([]byte(pipeline))
}

// Pin reads a pipeline's pin; ok is false when it is not pinned.
func (tx *Tx) Pin(pipeline string) (p Pin, ok bool, err error) {
	v := tx.btx.Bucket(bucketPins).Get([]byte(pipeline))
	if v == nil {
		return Pin{}, false, nil
	}
	return p, true, decodeRecord(v, &p)
}

func oneOf[T comparable](v T, set ...T) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func validRunState(s RunState) bool {
	return oneOf(s, RunQueued, RunRunning, RunSucceeded, RunFailed, RunCancelled)
}

func validModelState(s ModelState) bool {
	return oneOf(s, ModelCandidate, ModelEvaluating, ModelRejected, ModelLive, ModelStandby, ModelRetired, ModelRolledBack)
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
