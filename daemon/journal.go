package daemon

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/storage"
)

// The journal tells what happened: every event any part of kilnd records
// (ingest, pipelines, monitor, GPU, the API) is also logged here, once, as
// one line that reads like `kiln events` and names its pipeline, run, model
// or dataset and the reason, with the IDs as structured fields (PIPELINE,
// RUN, MODEL, DATASET, DEPLOYMENT, GPU_UUID, REASON, EVENT, SEQ, ACTOR under
// journald). Following the store's chain, rather than logging at each of the
// dozens of append sites, is what makes "every" true: an append site added
// later is journaled without anyone remembering to.
//
// Lines follow commits (store.Subscribe), so they are a few milliseconds
// late and never name an event that was rolled back. Only this kilnd's
// events are logged: the follow starts at the head the store had when it
// opened, and Run flushes the rest before the store closes.

// journalFollower logs events from next on.
type journalFollower struct {
	d    *Daemon
	next uint64 // the first seq not logged yet
}

// followEvents logs every event committed from seq j.next on until ctx
// ends; the returned channel closes once it has stopped. flush logs what
// the follow had not reached by then.
func (j *journalFollower) followEvents(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range j.d.store.Subscribe(ctx, j.next) {
			j.log(e)
		}
	}()
	return done
}

// flush logs the events committed after the follow stopped (the drain's
// last run and model updates); the store must still be open.
func (j *journalFollower) flush() {
	evs, err := j.d.store.Events(j.next, 0)
	if err != nil {
		j.d.log.Warn("journal: read the last events", "from", j.next, "err", err)
		return
	}
	for _, e := range evs {
		j.log(e)
	}
}

func (j *journalFollower) log(e storage.Event) {
	if e.Seq < j.next {
		return
	}
	j.next = e.Seq + 1
	level, msg, attrs := eventLine(e)
	j.d.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// warnKinds are the event kinds (or kind suffixes after the dot) that an
// operator should look at: the journal gives them PRIORITY=4.
var warnKinds = map[string]bool{
	"failed": true, "rejected": true, "reload_rejected": true, "quarantined": true, "lost": true,
	"unhealthy": true, "alarm": true, "rolled_back_to": true, "drift_detected": true, "suspect": true,
	"action_refused": true, "image_missing": true, "cordoned": true, "ingest.paused": true, "monitor.drift": true,
}

// refNoun is the ID letter a kind's noun refers to, so "run.failed" names
// its run first.
var refNoun = map[string]byte{
	"dataset": storage.LetterDataset, "run": storage.LetterRun, "model": storage.LetterModel,
	"deployment": storage.LetterDeployment,
}

// violationKeys are the details of a quarantine that its reason is made of.
var violationKeys = []string{"rule", "file", "line", "column", "observed", "allowed"}

// eventLine renders one event as a log record: a message a person reads in
// plain `journalctl -u kilnd` ("run pumps/r3 failed: OOM at 512Mi") and the
// fields a script filters on.
func eventLine(e storage.Event) (slog.Level, string, []slog.Attr) {
	noun, verb, _ := strings.Cut(e.Kind, ".")
	level := slog.LevelInfo
	if warnKinds[verb] || warnKinds[e.Kind] {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("event", e.Kind), slog.Uint64("seq", e.Seq), slog.String("actor", e.Actor)}
	if e.Pipeline != "" {
		attrs = append(attrs, slog.String("pipeline", e.Pipeline))
	}
	// The first ref of each kind names the record; the others are context
	// (the model a promotion replaced, the run a retry repeats).
	ids := map[byte]string{}
	var gpu string
	for _, r := range e.Refs {
		if _, l, _, err := storage.ParseID(r); err == nil {
			if _, ok := ids[l]; !ok {
				ids[l] = r
			}
		} else if gpu == "" && strings.HasPrefix(r, "GPU-") {
			gpu = r
		}
	}
	for _, k := range []struct {
		key    string
		letter byte
	}{{"dataset", storage.LetterDataset}, {"run", storage.LetterRun}, {"model", storage.LetterModel}, {"deployment", storage.LetterDeployment}} {
		if id, ok := ids[k.letter]; ok {
			attrs = append(attrs, slog.String(k.key, id))
		}
	}
	if gpu != "" {
		attrs = append(attrs, slog.String("gpu_uuid", gpu))
	}

	details := maps.Clone(e.Details)
	if details == nil {
		details = map[string]string{}
	}
	reason := takeReason(e.Kind, details)
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}

	var b strings.Builder
	switch e.Kind {
	case "model.rolled_back_to":
		b.WriteString(subject(e.Pipeline, "pipeline"))
		b.WriteString(" rolled back to model " + ids[storage.LetterModel])
		if from := details["from"]; from != "" {
			b.WriteString(" from " + from)
			delete(details, "from")
		}
	case "dataset.duplicate":
		b.WriteString("duplicate batch")
		if p := details["path"]; p != "" {
			b.WriteString(" " + p)
			delete(details, "path")
		}
		b.WriteString(" not ingested: same content as dataset " + ids[storage.LetterDataset])
	case "pipelines.reloaded", "pipelines.reload_rejected":
		b.WriteString("pipelines " + strings.ReplaceAll(verb, "_", " "))
		if t := details["trigger"]; t != "" {
			b.WriteString(" (" + t + ")")
			delete(details, "trigger")
		}
		if e.Kind == "pipelines.reloaded" {
			b.WriteString(": added " + orNone(details["added"]) + ", changed " + orNone(details["changed"]) +
				", removed " + orNone(details["removed"]))
			delete(details, "added")
			delete(details, "changed")
			delete(details, "removed")
		}
	default:
		b.WriteString(noun)
		switch id := primaryRef(noun, ids, gpu); {
		case id != "":
			b.WriteString(" " + id)
		case noun == "pipeline" && e.Pipeline != "":
			b.WriteString(" " + e.Pipeline)
		case e.Pipeline != "":
			b.WriteString(" of pipeline " + e.Pipeline)
		}
		if verb != "" {
			b.WriteString(" " + strings.ReplaceAll(verb, "_", " "))
		}
	}
	if e.Actor != "" && e.Actor != actorKilnd {
		b.WriteString(" by " + e.Actor)
	}
	if reason != "" {
		b.WriteString(": " + reason)
	}
	if e.Kind == "pipelines.reload_rejected" {
		b.WriteString("; the old pipelines keep running")
	}
	if len(details) > 0 {
		b.WriteString(" (")
		for i, k := range slices.Sorted(maps.Keys(details)) {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(k + "=" + quoteIfSpaced(details[k]))
		}
		b.WriteByte(')')
	}
	return level, b.String(), attrs
}

// takeReason removes and returns what explains the event: its reason or
// error, or for a quarantine the broken rule in the words `kiln datasets`
// uses.
func takeReason(kind string, details map[string]string) string {
	keys := []string{"reason", "error"}
	if strings.HasPrefix(kind, "model.") {
		// A promotion's or rejection's why is the gate's verdict; its
		// "reason" is why the run was made (300 new rows), kept as a detail.
		keys = []string{"gate", "reason", "error"}
	}
	for _, k := range keys {
		if r := details[k]; r != "" {
			delete(details, k)
			if k == "gate" && details["reason"] == r {
				delete(details, "reason")
			}
			return oneLine(r)
		}
	}
	if kind != "dataset.quarantined" || details["rule"] == "" {
		return ""
	}
	// The same shape as ingest's Violation.String.
	var b strings.Builder
	b.WriteString(details["rule"])
	if f := details["file"]; f != "" {
		b.WriteString(" in " + f)
		if l := details["line"]; l != "" {
			b.WriteString(" line " + l)
		}
	}
	if c := details["column"]; c != "" {
		b.WriteString(" column " + strconv.Quote(c))
	}
	b.WriteString(": observed " + details["observed"] + ", allowed " + details["allowed"])
	for _, k := range violationKeys {
		delete(details, k)
	}
	return b.String()
}

func primaryRef(noun string, ids map[byte]string, gpu string) string {
	if noun == "gpu" {
		return gpu
	}
	if l, ok := refNoun[noun]; ok {
		return ids[l]
	}
	return ""
}

func subject(name, noun string) string {
	if name == "" {
		return noun
	}
	return noun + " " + name
}

// oneLine joins a multi-line reason (several files of a rejected reload)
// so each journal entry stays one line.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, "; ")
}

// orNone lists a comma-separated detail for a person.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func quoteIfSpaced(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n=\"") {
		return strconv.Quote(s)
	}
	return s
}
