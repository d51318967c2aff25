// Package ui is kiln's dashboard: read-only HTML pages about the appliance,
// rendered on the server with html/template from kilnd's own records, and
// served by kilnd on its API socket under Prefix, behind the same
// peer-credential check as every read route (group kiln). kilnd opens no TCP
// port for it: `kiln ui` forwards a loopback port to the socket in the
// operator's session, with the operator's credentials.
//
// Pages: the overview (kilnd, containerd, GPUs, disk, one card per
// pipeline), a pipeline (the accuracy timeline drawn by package chart as
// plain SVG, its models, runs with their logs, datasets with their
// validation reports, quarantined batches with REASON.json), the lineage
// around any dataset, run or model (nested lists of links), and the events,
// live through server-sent events from the store's event stream.
//
// Everything is embedded (templates, one stylesheet, one small script); the
// pages load nothing from elsewhere, and the Content-Security-Policy says so
// to the browser. Every page works without JavaScript; the events page then
// refreshes itself instead of streaming. Nothing here changes state: changes
// stay with the CLI, where they are authorised and recorded.
//
// The package reads kilnd through Source, which package daemon implements
// over the same views its API routes answer with; it imports no store.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
)

// Prefix is where the pages are, on kilnd's API socket and on `kiln ui`'s port.
const Prefix = "/ui/"

// ErrNotFound is a Source's answer for an ID or pipeline it does not know.
var ErrNotFound = errors.New("not found")

// Source is what the pages read of kilnd. Lists are oldest first.
type Source interface {
	Status(ctx context.Context) api.Status
	GPU() (api.GPUReport, error)
	// Pipelines are the loaded pipelines' names, sorted.
	Pipelines() []string
	Datasets(pipeline string) ([]api.Dataset, error)
	// Report is a dataset's validation report as stored (a JSON object).
	Report(id string) (any, error)
	// QuarantineReason is the REASON.json of a quarantined batch.
	QuarantineReason(id string) ([]byte, error)
	Runs(pipeline string) ([]api.Run, error)
	// RunLog writes a run's training log.
	RunLog(id string, w io.Writer) error
	Models(pipeline string) ([]api.Model, error)
	Accuracy(pipeline string) (api.Accuracy, error)
	// Detector is the live model's detector statistic after each feedback
	// version, and a note on its phase; nil without a live model.
	Detector(pipeline string) ([]chart.DetectorPoint, string, error)
	// Lineage is the graph up (ancestors) or down (descendants) of id.
	Lineage(id, direction string) (api.Lineage, error)
	Events(since uint64, limit int) ([]api.Event, error)
	// Subscribe streams events from since on until ctx ends.
	Subscribe(ctx context.Context, since uint64) <-chan api.Event
	// Head is the newest event's sequence number.
	Head() uint64
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pages are parsed once: each page with the layout.
var pages = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"overview", "pipeline", "lineage", "events", "log", "error"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// Handler serves the pages.
type Handler struct {
	src Source
	log *slog.Logger
	mux *http.ServeMux
}

// New builds the dashboard's handler over src.
func New(src Source, log *slog.Logger) *Handler {
	h := &Handler{src: src, log: log, mux: http.NewServeMux()}
	static, _ := fs.Sub(staticFS, "static") // a fixed embedded folder: cannot fail
	h.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.overview)
	h.mux.HandleFunc("GET "+Prefix+"pipelines/{name}", h.pipeline)
	h.mux.HandleFunc("GET "+Prefix+"runs/{pipeline}/{id}/log", h.runLog)
	h.mux.HandleFunc("GET "+Prefix+"lineage/{pipeline}/{id}", h.lineage)
	h.mux.HandleFunc("GET "+Prefix+"events", h.events)
	h.mux.HandleFunc("GET "+Prefix+"events/stream", h.stream)
	h.mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, http.StatusNotFound, "no page "+r.URL.Path)
	})
	return h
}

// contentPolicy: nothing from elsewhere, no inline script, no framing.
const contentPolicy = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) render(w http.ResponseWriter, status int, page string, data any) {
	var b strings.Builder
	if err := pages[page].Execute(&b, data); err != nil {
		h.log.Error("ui: render", "page", page, "err", err)
		http.Error(w, "render "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, b.String()) // the browser went away: nothing to do
}

type errorPage struct {
	Title, Message string
}

func (h *Handler) fail(w http.ResponseWriter, status int, msg string) {
	h.render(w, status, "error", errorPage{Title: http.StatusText(status), Message: msg})
}

// failErr answers a Source error: 404 for ErrNotFound, else 500.
func (h *Handler) failErr(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrNotFound) {
		h.fail(w, http.StatusNotFound, err.Error())
		return
	}
	h.fail(w, http.StatusInternalServerError, err.Error())
}

// card is one pipeline on the overview.
type card struct {
	Name        string
	Monitor     api.PipelineMonitor
	Live        *api.Model
	LastData    *api.Dataset
	LastRun     *api.Run
	Quarantined []api.Dataset
	Err         string
}

type overviewPage struct {
	Title  string
	Status api.Status
	GPU    api.GPUReport
	GPUErr string
	Cards  []card
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	p := overviewPage{Title: "kiln", Status: h.src.Status(r.Context())}
	var err error
	if p.GPU, err = h.src.GPU(); err != nil {
		p.GPUErr = err.Error()
	}
	monitors := map[string]api.PipelineMonitor{}
	for _, m := range p.Status.Monitor {
		monitors[m.Pipeline] = m
	}
	for _, name := range h.src.Pipelines() {
		c := card{Name: name, Monitor: monitors[name]}
		if err := h.fillCard(&c); err != nil {
			c.Err = err.Error()
		}
		p.Cards = append(p.Cards, c)
	}
	h.render(w, http.StatusOK, "overview", p)
}

func (h *Handler) fillCard(c *card) error {
	ds, err := h.src.Datasets(c.Name)
	if err != nil {
		return err
	}
	for i := range ds {
		d := &ds[i]
		if d.Kind != "feedback" {
			c.LastData = d
		}
		if d.State == "quarantined" {
			c.Quarantined = append(c.Quarantined, *d)
		}
	}
	runs, err := h.src.Runs(c.Name)
	if err != nil {
		return err
	}
	if len(runs) > 0 {
		c.LastRun = &runs[len(runs)-1]
	}
	models, err := h.src.Models(c.Name)
	if err != nil {
		return err
	}
	for i := range models {
		if models[i].ID == c.Monitor.Live {
			c.Live = &models[i]
		}
	}
	return nil
}

// datasetRow is a dataset with its validation report, or its REASON.json.
type datasetRow struct {
	api.Dataset
	Report string
	Reason string
}

type pipelinePage struct {
	Title       string
	Name        string
	Accuracy    api.Accuracy
	Chart       template.HTML
	Models      []api.Model
	Runs        []api.Run
	Datasets    []datasetRow
	Quarantined []datasetRow
	Omitted     int
}

// maxReports bounds the validation reports one pipeline page reads: the
// newest versions'; older ones are a lineage click away.
const maxReports = 50

func (h *Handler) pipeline(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !slices.Contains(h.src.Pipelines(), name) {
		h.fail(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q is loaded", name))
		return
	}
	p := pipelinePage{Title: name, Name: name}
	var err error
	if p.Accuracy, err = h.src.Accuracy(name); err != nil {
		h.failErr(w, err)
		return
	}
	if p.Runs, err = h.src.Runs(name); err != nil {
		h.failErr(w, err)
		return
	}
	if p.Models, err = h.src.Models(name); err != nil {
		h.failErr(w, err)
		return
	}
	det, note, err := h.src.Detector(name)
	if err != nil {
		h.failErr(w, err)
		return
	}
	opts := chart.Options{Detector: det}
	if det != nil && note != "" {
		opts.DetectorNote = ": " + note
	}
	for _, run := range p.Runs {
		label := "run " + run.ID
		if t := run.Labels["trigger"]; t != "" {
			label += " (" + t + ")"
		}
		opts.Marks = append(opts.Marks, chart.Mark{Time: run.Created, Kind: "retrain", Ref: run.ID, Label: label})
	}
	p.Chart = template.HTML(chart.Accuracy(p.Accuracy, opts)) //nolint:gosec // G203: chart escapes every text it writes
	ds, err := h.src.Datasets(name)
	if err != nil {
		h.failErr(w, err)
		return
	}
	for i, d := range slices.Backward(ds) {
		row := datasetRow{Dataset: d}
		if d.State == "quarantined" {
			if b, err := h.src.QuarantineReason(d.ID); err != nil {
				row.Reason = "REASON.json unreadable: " + err.Error()
			} else {
				row.Reason = string(b)
			}
			p.Quarantined = append(p.Quarantined, row)
		}
		if len(ds)-1-i >= maxReports {
			p.Omitted++
			continue
		}
		if rep, err := h.src.Report(d.ID); err != nil {
			row.Report = "validation report unreadable: " + err.Error()
		} else if rep != nil {
			b, _ := json.MarshalIndent(rep, "", "  ") // decoded from JSON: encodes back
			row.Report = string(b)
		}
		p.Datasets = append(p.Datasets, row)
	}
	slices.Reverse(p.Models)
	slices.Reverse(p.Runs)
	h.render(w, http.StatusOK, "pipeline", p)
}

type logPage struct {
	Title, Run, Pipeline, Log string
	Cut                       int64
}

// maxLog is how much of a log's end the log page shows.
const maxLog = 256 << 10

func (h *Handler) runLog(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("pipeline") + "/" + r.PathValue("id")
	t := &tail{max: maxLog}
	if err := h.src.RunLog(id, t); err != nil {
		h.failErr(w, err)
		return
	}
	h.render(w, http.StatusOK, "log", logPage{Title: "log of " + id, Run: id, Pipeline: r.PathValue("pipeline"), Log: string(t.buf), Cut: t.cut})
}

// tail keeps the last max bytes written to it.
type tail struct {
	buf []byte
	max int
	cut int64
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.cut += int64(over)
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// node is one lineage node with the nodes next to it, away from the root.
type node struct {
	ID    string
	Edge  string
	Kids  []*node
	Again bool // shown already elsewhere in the tree: not expanded twice
}

type lineagePage struct {
	Title    string
	ID       string
	Pipeline string
	Up, Down *node
	UpN      int
	DownN    int
}

func (h *Handler) lineage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("pipeline") + "/" + r.PathValue("id")
	p := lineagePage{Title: "lineage of " + id, ID: id, Pipeline: r.PathValue("pipeline")}
	up, err := h.src.Lineage(id, "up")
	if err != nil {
		h.failErr(w, err)
		return
	}
	down, err := h.src.Lineage(id, "down")
	if err != nil {
		h.failErr(w, err)
		return
	}
	p.Up, p.UpN = tree(id, up, true), len(up.Nodes)
	p.Down, p.DownN = tree(id, down, false), len(down.Nodes)
	h.render(w, http.StatusOK, "lineage", p)
}

// tree turns the edges into a tree rooted at id: up, a node's children are
// what it came from; down, what came from it. A node reached twice is
// listed again but expanded once.
func tree(id string, l api.Lineage, up bool) *node {
	next := map[string][]api.LineageEdge{}
	for _, e := range l.Edges {
		if up {
			next[e.To] = append(next[e.To], e)
		} else {
			next[e.From] = append(next[e.From], e)
		}
	}
	seen := map[string]bool{}
	var grow func(n *node)
	grow = func(n *node) {
		if seen[n.ID] {
			n.Again = len(next[n.ID]) > 0
			return
		}
		seen[n.ID] = true
		for _, e := range next[n.ID] {
			k := &node{ID: e.From, Edge: e.Type}
			if !up {
				k.ID = e.To
			}
			n.Kids = append(n.Kids, k)
			grow(k)
		}
	}
	root := &node{ID: id}
	grow(root)
	return root
}

type eventsPage struct {
	Title  string
	Events []api.Event
	Next   uint64
}

// pageEvents is how many of the newest events the events page lists.
const pageEvents = 200

func (h *Handler) events(w http.ResponseWriter, _ *http.Request) {
	head := h.src.Head()
	since := uint64(1)
	if head > pageEvents {
		since = head - pageEvents + 1
	}
	evs, err := h.src.Events(since, pageEvents)
	if err != nil {
		h.failErr(w, err)
		return
	}
	slices.Reverse(evs)
	h.render(w, http.StatusOK, "events", eventsPage{Title: "events", Events: evs, Next: head + 1})
}

// stream sends events from ?since= (or after the browser's Last-Event-ID,
// when it reconnects) as server-sent events, until the browser goes or
// kilnd stops.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	since, err := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
	if err != nil {
		since = h.src.Head() + 1
	}
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		since = last + 1
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	_, _ = io.WriteString(w, ": kilnd events\n\n") // opens the stream at once; a gone browser ends it below
	flush()
	for e := range h.src.Subscribe(r.Context(), since) {
		b, err := json.Marshal(e)
		if err != nil {
			continue
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Seq, b); err != nil {
			return
		}
		flush()
	}
}

// shortID is a record's ID: pipeline, a letter, a number ("pumps/m7").
var shortID = regexp.MustCompile(`^[a-z0-9-]{1,32}/[a-z][0-9]+$`)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return humanDuration(time.Since(t)) + " ago"
	},
	"metric": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return strconv.FormatFloat(*v, 'f', 4, 64)
	},
	"num": func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) },
	"bytes": func(n uint64) string {
		const unit = 1024
		if n < unit {
			return strconv.FormatUint(n, 10) + " B"
		}
		div, exp := uint64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"pct": func(used, total uint64) string {
		if total == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f%%", float64(used)/float64(total)*100)
	},
	// link is the lineage page of a record's short ID ("" for anything
	// else: an image reference, an actor).
	"link": func(id string) string {
		if !shortID.MatchString(id) {
			return ""
		}
		return Prefix + "lineage/" + id
	},
	"plural": func(n int64, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return strconv.FormatInt(n, 10) + " " + word + "s"
	},
	"short": func(s string) string {
		if len(s) > 19 {
			return s[:19] + "…"
		}
		return s
	},
	"metricOf": func(m map[string]float64, name string) string {
		v, ok := m[name]
		if !ok {
			return "—"
		}
		return strconv.FormatFloat(v, 'f', 4, 64)
	},
	"details": func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b strings.Builder
		for i, k := range keys {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(k + "=" + m[k])
		}
		return b.String()
	},
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}
