package systemd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	slogjournal "github.com/systemd/slog-journal"
)

// JournalEnabled reports whether journald's native socket accepts datagrams. It is true on any
// systemd host, including for a kilnd started by hand in a terminal; NewLogHandler therefore
// also checks that stderr is the journal stream.
func JournalEnabled() bool { return journal.Enabled() }

// NewLogHandler returns a slog handler that writes to journald with structured fields when
// journald is there and stderr is the stream systemd connected to it (JOURNAL_STREAM matches
// stderr, which must then be an *os.File such as os.Stderr); otherwise a text handler on
// stderr. Attribute keys become journal field names: upper-cased, other characters than
// [A-Z0-9_] replaced by '_', so "pipeline" -> PIPELINE and "gpu-uuid" -> GPU_UUID; groups
// prefix their fields (GROUP_KEY). The choice matters because slog-journal silently drops
// records when journald is absent.
func NewLogHandler(stderr io.Writer, level slog.Leveler) slog.Handler {
	if f, ok := stderr.(*os.File); ok && JournalEnabled() && isJournalStream(f) {
		h, err := slogjournal.NewHandler(&slogjournal.Options{
			Level:        level,
			ReplaceGroup: journalField,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				a.Key = journalField(a.Key)
				if len(groups) == 0 && reservedField[a.Key] {
					a.Key = "ATTR_" + a.Key
				}
				return a
			},
		})
		if err == nil {
			return causeInMessage{h}
		}
	}
	return slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
}

// causeInMessage appends a record's "err" (or "error") attribute to its
// message. journalctl shows MESSAGE alone unless asked for -o verbose, so
// without this "reload rejected" would not say why; the ERR field stays for
// filters. The text handler off journald prints err=... on the same line
// already.
type causeInMessage struct{ slog.Handler }

func (h causeInMessage) Handle(ctx context.Context, r slog.Record) error {
	var cause string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "error" {
			cause = a.Value.Resolve().String()
			return false
		}
		return true
	})
	if cause == "" || strings.Contains(r.Message, cause) {
		return h.Handler.Handle(ctx, r)
	}
	lines := strings.Split(strings.TrimSpace(cause), "\n")
	out := slog.NewRecord(r.Time, r.Level, r.Message+": "+strings.Join(lines, "; "), r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return h.Handler.Handle(ctx, out)
}

func (h causeInMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return causeInMessage{h.Handler.WithAttrs(as)}
}

func (h causeInMessage) WithGroup(name string) slog.Handler {
	return causeInMessage{h.Handler.WithGroup(name)}
}

// reservedField are fields slog-journal writes itself; an attribute of the same name would
// add a second value to them.
var reservedField = map[string]bool{
	"MESSAGE": true, "PRIORITY": true, "CODE_FILE": true, "CODE_FUNC": true, "CODE_LINE": true,
	"SYSLOG_TIMESTAMP": true, "SYSLOG_IDENTIFIER": true,
}

// journalField maps a slog key to a valid journal field name: [A-Z0-9_], at most 64 bytes,
// not starting with '_' (trusted fields, which journald drops) or a digit.
func journalField(key string) string {
	b := []byte(strings.TrimLeft(strings.ToUpper(key), "_"))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), "_")
	switch {
	case s == "":
		s = "ATTR"
	case s[0] >= '0' && s[0] <= '9':
		s = "ATTR_" + s
	}
	return s[:min(len(s), 64)]
}

// isJournalStream reports whether f is the stream socket named by JOURNAL_STREAM
// ("<device>:<inode>"), i.e. systemd connected it to journald for this service.
func isJournalStream(f *os.File) bool {
	env := os.Getenv("JOURNAL_STREAM")
	if env == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
