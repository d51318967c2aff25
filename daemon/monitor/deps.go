package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// Store is what the monitor needs of kiln's store.
type Store interface {
	Update(ctx context.Context, fn func(*storage.Tx) error) error
	View(fn func(*storage.Tx) error) error
	OpenBlob(ref storage.BlobRef) (*os.File, error)
	Subscribe(ctx context.Context, fromSeq uint64) <-chan storage.Event
	Head() (seq uint64, hash string)
}

// Backend is one model's serving container.
type Backend interface {
	Model() string
	DialContext(ctx context.Context) (net.Conn, error)
}

// ServingFunc returns what a pipeline serves now: the live backend and the
// warm standby (nil when none runs). It blocks until the pipeline's state is
// restored after a start, so feedback is never scored against "no model"
// merely because kilnd was still starting.
type ServingFunc func(ctx context.Context, pipeline string) (live, standby Backend, err error)

// Feedback is a feedback version's content (package ingest reads it).
type Feedback struct {
	Type    string     // storage.FeedbackRows or storage.FeedbackLabels
	Columns []string   // rows: the feature columns, label excluded
	Rows    [][]string // rows: feature values
	Images  [][]byte   // rows of an images pipeline: the labelled images
	Labels  []string   // the label of each row (image), or of each id
	IDs     []string   // labels: "<request-id>" or "<request-id>:<row>"
}

// FeedbackSource reads feedback versions and records joined ones.
type FeedbackSource interface {
	ReadFeedback(d storage.Dataset, label string) (*Feedback, error)
	// CommitJoined records labelled rows joined from labels version source
	// as a feedback version of type joined; idempotent per source.
	CommitJoined(ctx context.Context, pipeline, source string, columns []string, rows [][]string, labels []string) (storage.Dataset, error)
}

// Logged is one request of the prediction log.
type Logged struct {
	Model, Protocol, ContentType string
	Time                         time.Time
	Status                       int
	LatencyUS                    int64
	Rows                         int
	Input                        []byte // nil when the log kept no input
	Output                       []byte
	// Truncated says Output holds only the start of a longer answer, which
	// cannot be scored.
	Truncated bool
}

// ErrNotLogged is what PredictionLog.Lookup wraps for a request id the log
// does not hold (never logged, or gone with retention or a purge).
var ErrNotLogged = errors.New("not in the prediction log")

// PredictionLog reads pipelines' prediction logs (package serve).
type PredictionLog interface {
	// Flush makes what pipeline's endpoint has buffered visible to Lookup.
	Flush(ctx context.Context, pipeline string) error
	Lookup(pipeline, requestID string) (Logged, error)
	// Scan reads pipeline's records from since on, in time order. A
	// record's Input and Output are valid only until fn returns.
	Scan(pipeline string, since time.Time, fn func(Logged) error) error
	// ScanFrom is Scan from a position: it reads the records appended
	// after cur (the zero LogCursor: from since on), and returns the
	// position after the last one, so the next call reads only what was
	// appended since. Positions follow the log's append order, not Time: a
	// slow request logged after later ones is read once, when it is
	// appended. An error wrapping ErrLogCursorStale says the log was
	// rewritten under cur (a purge, retention): read again from the zero
	// LogCursor.
	ScanFrom(pipeline string, since time.Time, cur LogCursor, fn func(Logged) error) (LogCursor, error)
}

// LogCursor is a position in a pipeline's prediction log (the segment read
// last, its inode then, and the offset after its last whole record).
type LogCursor struct {
	Segment, Inode uint64
	Offset         int64
}

// ErrLogCursorStale is what PredictionLog.ScanFrom wraps when cur no longer
// points into the log as it is.
var ErrLogCursorStale = errors.New("prediction log position is stale")

// Deps are what a Monitor is built from.
type Deps struct {
	Store    Store
	Serving  ServingFunc
	Feedback FeedbackSource
	Log      PredictionLog
	Actions  Actions
	Logger   *slog.Logger
	// RowKey hashes a row's feature values the way ingest does, so a
	// feedback row meets its training twin however its numbers are spelled
	// (a v2 float, a CSV integer). Nil: trimmed strings, compared as written.
	RowKey func(fields []string) uint64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// spec fields the monitor reads, copied out of a config.Pipeline.
type pipelineSpec struct {
	name, label, format, protocol, metric string
	standbyStop                           bool
	psiMax                                float64
	degradation                           string
	targetFalseAlarm                      float64
	maxRetrains, minRows                  int
	classes                               []string
	probation                             time.Duration
	cooldown                              time.Duration
}

func specOf(p *config.Pipeline) pipelineSpec {
	s := pipelineSpec{name: p.Name, label: p.Data.Label, format: p.Data.Format, protocol: p.Serve.Protocol,
		metric: p.Evaluate.Metric, standbyStop: p.Serve.Standby == config.StandbyStop, psiMax: 0.25,
		degradation: p.Triggers.Degradation, targetFalseAlarm: p.Monitor.TargetFalseAlarm,
		maxRetrains: p.Monitor.MaxRetrainsPerDay, minRows: p.Triggers.NewData.MinRows, classes: p.Data.Validate.Labels,
		probation: p.Monitor.Probation.Duration, cooldown: p.Monitor.Cooldown.Duration}
	if d := p.Data.Validate.Drift; d != nil && d.PSIMax > 0 {
		s.psiMax = d.PSIMax
	}
	return s
}

func closeQuietly(c io.Closer) { _ = c.Close() } // read side

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }
