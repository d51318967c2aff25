package ingest

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// LabelsName is the Files entry of a late-labels version that holds its normalised labels:
// a CSV with the header request_id,label and one usable row per request id. The dot keeps
// it from colliding with a dropped file (dot names are never ingested); the manifest lists
// it as the part named "labels". Train and Holdout are nil for such a version.
const LabelsName = ".kiln-labels.csv"

// Headers of late labels: the CSV header, and the keys of each JSONL object.
var (
	labelsHeaderCSV  = []string{"request_id", "label"}
	labelsKeysJSONL  = []string{"id", "label"}
	labelsHeaderLine = []byte("request_id,label\n")
)

// FeedbackCounts is what happened to the rows of a feedback version: how many were read,
// how many it holds, and why the rest were left out (each rule's first occurrence, with file
// and line, is in Report.LeftOut).
type FeedbackCounts struct {
	Type          string `json:"type"` // storage.FeedbackRows, FeedbackLabels or FeedbackJoined
	Read          int64  `json:"read"`
	Usable        int64  `json:"usable"`
	EmptyIDs      int64  `json:"empty_ids,omitempty"`
	DuplicateIDs  int64  `json:"duplicate_ids,omitempty"`
	BadLabels     int64  `json:"bad_labels,omitempty"`     // outside data.validate.labels
	MissingLabels int64  `json:"missing_labels,omitempty"` // empty or null
	Malformed     int64  `json:"malformed,omitempty"`      // syntax, field count, unknown keys, over-long lines
}

// Rules of feedback (besides the data's own).
const (
	RuleFeedbackColumns = "feedback_columns"     // a header that is neither the data's nor request_id,label
	RuleFeedbackNoData  = "feedback_before_data" // labelled rows before any data version
	RuleNoUsableRows    = "no_usable_rows"       // every row of the batch was left out
	RuleEmptyID         = "empty_id"
	RuleDuplicateID     = "duplicate_id"
)

// feedbackHeader decides a feedback batch's type from a file's header (CSV) or first object
// (JSONL): the data's own columns are labelled rows, request_id,label (JSONL: id and label)
// are late labels. When the data's columns happen to be request_id,label the file is rows.
// Anything else, or a second file of another type, is a violation naming the file, the
// line and the first differing column; false means the file's rows are not to be read.
func (t *tabular) feedbackHeader(names []string) bool {
	var data []string
	for _, c := range t.refCols {
		data = append(data, c.Name)
	}
	same := func(a, b []string) bool {
		if t.format == config.FormatJSONL { // key order carries no meaning in JSON
			return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
		}
		return slices.Equal(a, b)
	}
	labelsHdr := labelsHeaderCSV
	if t.format == config.FormatJSONL {
		labelsHdr = labelsKeysJSONL
	}
	typ := ""
	switch {
	case t.refCols != nil && same(names, data):
		typ = storage.FeedbackRows
	case same(names, labelsHdr):
		typ = storage.FeedbackLabels
	}
	got := strings.Join(names, ",")
	labelsText := strings.Join(labelsHdr, ",") + " (late labels)"
	switch {
	case t.labelsOnly && typ != storage.FeedbackLabels:
		t.fbType = storage.FeedbackLabels
		t.fail(RuleFeedbackColumns, "", got, lateLabelsOnly)
		return false
	case typ == "" && t.refCols == nil:
		// Not late labels, so meant as rows: typed so, should a person release it.
		t.fbType = storage.FeedbackRows
		t.fail(RuleFeedbackNoData, "", got,
			"a data version first: labelled feedback rows are held to the data's columns and no data version is admitted yet; or "+labelsText)
		return false
	case typ == "":
		col, why := firstDifference(names, data, t.format == config.FormatJSONL)
		t.fail(RuleFeedbackColumns, col, got+" ("+why+")", strings.Join(data, ",")+" (labelled rows: the data's columns, label included, in the data's order) or "+labelsText)
		return false
	case t.fbType != "" && typ != t.fbType:
		t.fail(RuleFeedbackColumns, "", got+" ("+typ+")", "the batch's first file's type ("+t.fbType+"): a batch is one type")
		return false
	}
	if t.fbType == "" && typ == storage.FeedbackLabels {
		t.header = slices.Clone(labelsHeaderCSV)
		t.ids = map[uint64]struct{}{}
		_, _ = t.trainW.Write(labelsHeaderLine)
	}
	t.fbType = typ
	return true
}

// firstDifference names the first column where a header departs from the data's: by
// position for CSV, by name for JSONL (a data column missing, else a key the data lacks).
func firstDifference(got, want []string, byName bool) (column, why string) {
	if byName {
		for _, w := range want {
			if !slices.Contains(got, w) {
				return w, "no " + strconv.Quote(w)
			}
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				return g, strconv.Quote(g) + " is not a data column"
			}
		}
		return "", "same names"
	}
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			return want[i], fmt.Sprintf("column %d missing, the data has %q", i+1, want[i])
		case i >= len(want):
			return got[i], fmt.Sprintf("column %d %q is more than the data's %d", i+1, got[i], len(want))
		case got[i] != want[i]:
			return got[i], fmt.Sprintf("column %d is %q, the data has %q", i+1, got[i], want[i])
		}
	}
	return "", "same columns"
}

// leave counts a row left out of a feedback version; the first of each rule is kept with
// where it was.
func (t *tabular) leave(rule, column, observed, allowed string) {
	if v := t.leftBy[rule]; v != nil {
		v.Count++
		return
	}
	v := &Violation{Rule: rule, File: t.file, Line: t.line, Column: column, Observed: oneLine(observed), Allowed: oneLine(allowed), Count: 1}
	t.leftBy[rule] = v
	t.leftOut = append(t.leftOut, v)
}

// badLabel: a missing or disallowed label quarantines data, and leaves a feedback row out.
func (t *tabular) badLabel(rule, column, observed, allowed string) {
	if t.feedback {
		t.dropRow = true
		t.leave(rule, column, observed, allowed)
		return
	}
	t.fail(rule, column, observed, allowed)
}

// labelRow takes one late label: a usable one (an id, not seen before in the batch, with an
// allowed label) is written to the labels part as request_id,label; the rest are counted.
// Duplicates keep the first usable label. Ids are remembered by their 64-bit hash (8 bytes
// each, so a 1 GiB file's ids fit): a collision would count a new id as a duplicate, about
// once in 10^5 files of 20 million ids.
func (t *tabular) labelRow(rec []byte) {
	t.rows++
	if t.skipRows {
		return
	}
	var id, label []byte
	labelNull := false
	switch t.format {
	case config.FormatCSV:
		fields, ok := t.splitCSV(rec)
		if !ok {
			t.leave("csv_syntax", "", clipValue(string(rec)), "RFC 4180 quoting")
			return
		}
		if len(fields) != 2 {
			t.leave("columns", "", fmt.Sprintf("%d fields", len(fields)), "2 fields (request_id,label)")
			return
		}
		id, label = fields[0], fields[1]
		labelNull = isNull(label, false)
	case config.FormatJSONL:
		pairs, ok := scanObject(rec, t.pairs[:0])
		t.pairs = pairs
		if !ok {
			t.leave("json_syntax", "", clipValue(string(rec)), "one JSON object per line")
			return
		}
		labelNull = true
		for _, p := range pairs {
			switch p.key {
			case "id":
				id = p.val
				if !p.str && string(p.val) == "null" {
					id = nil
				}
			case "label":
				label, labelNull = p.val, isNull(p.val, p.str) || len(bytes.TrimSpace(p.val)) == 0
			default:
				t.leave("columns", p.key, "an unknown key", "id, label")
				return
			}
		}
	}
	id, label = bytes.TrimSpace(id), bytes.TrimSpace(label)
	switch {
	case len(id) == 0:
		t.leave(RuleEmptyID, "request_id", `""`, "a request id on every row")
	case labelNull || len(label) == 0:
		t.leave("label_missing", "label", clipValue(string(label)), "a label on every row")
	case t.allowed != nil && !t.allowed[string(label)]:
		t.leave("labels", "label", clipValue(string(label)), strings.Join(t.rules.Labels, ", "))
	default:
		h := xxh64(id, 0)
		if _, dup := t.ids[h]; dup {
			t.leave(RuleDuplicateID, "request_id", clipValue(string(id)), "each request id once in a batch (the first label is kept)")
			return
		}
		t.ids[h] = struct{}{}
		t.usable++
		b := appendCSVField(t.labelsBuf[:0], id)
		b = append(b, ',')
		b = appendCSVField(b, label)
		b = append(b, '\n')
		t.labelsBuf = b
		_, _ = t.trainW.Write(b)
	}
}

// appendCSVField writes one field, quoted only when it must be (RFC 4180).
func appendCSVField(b, f []byte) []byte {
	if !bytes.ContainsAny(f, ",\"\r\n") && (len(f) == 0 || f[0] != ' ' && f[len(f)-1] != ' ') {
		return append(b, f...)
	}
	b = append(b, '"')
	for _, c := range f {
		if c == '"' {
			b = append(b, '"')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// finishFeedback runs the batch-wide feedback rule: a batch with no usable row is wholly
// bad and quarantined, saying why each row was left out.
func (t *tabular) finishFeedback() {
	if t.fbType == "" {
		return // its header was refused already
	}
	if t.usableRows() > 0 || len(t.violations) > 0 {
		return
	}
	why := []string{fmt.Sprintf("%d rows", t.rows)}
	for _, v := range t.leftOut {
		w := fmt.Sprintf("%d %s (first: %s", v.Count, v.Rule, quoteName(v.File))
		if v.Line > 0 {
			w += fmt.Sprintf(" line %d", v.Line)
		}
		why = append(why, w+")")
	}
	t.file, t.line = "", 0
	if len(t.files) == 1 {
		t.file = t.files[0]
	}
	allowed := "at least one row with an allowed label"
	if t.fbType == storage.FeedbackLabels {
		allowed = "at least one row with a request id and an allowed label"
	}
	t.fail(RuleNoUsableRows, "", strings.Join(why, ", "), allowed)
}

func (t *tabular) usableRows() int64 {
	if t.fbType == storage.FeedbackLabels {
		return t.usable
	}
	return t.train + t.holdout
}

// feedbackCounts sums up the batch's rows for the report.
func (t *tabular) feedbackCounts() *FeedbackCounts {
	if !t.feedback {
		return nil
	}
	c := &FeedbackCounts{Type: t.fbType, Read: t.rows, Usable: t.usableRows()}
	for _, v := range t.leftOut {
		switch v.Rule {
		case RuleEmptyID:
			c.EmptyIDs += v.Count
		case RuleDuplicateID:
			c.DuplicateIDs += v.Count
		case "labels":
			c.BadLabels += v.Count
		case "label_missing":
			c.MissingLabels += v.Count
		default:
			c.Malformed += v.Count
		}
	}
	return c
}

// labelsChecks lists the rules a late-labels batch was held to.
func (t *tabular) labelsChecks() []Check {
	out := []Check{{Rule: RuleFeedbackColumns, OK: t.byRule[RuleFeedbackColumns] == nil, Observed: strings.Join(t.header, ","), Allowed: "request_id,label"}}
	for _, r := range []struct{ rule, allowed string }{
		{RuleEmptyID, "a request id on every row"},
		{RuleDuplicateID, "each request id once"},
		{"label_missing", "a label on every row"},
		{"labels", strings.Join(t.rules.Labels, ", ")},
		{"columns", "2 fields (request_id,label)"},
	} {
		if r.rule == "labels" && len(t.rules.Labels) == 0 {
			continue
		}
		c := Check{Rule: r.rule, OK: true, Observed: "none left out", Allowed: r.allowed}
		if v := t.leftBy[r.rule]; v != nil {
			c.OK, c.Observed = false, fmt.Sprintf("%d rows left out", v.Count)
		}
		out = append(out, c)
	}
	out = append(out, Check{Rule: RuleNoUsableRows, OK: t.usable > 0, Observed: fmt.Sprintf("%d of %d rows usable", t.usable, t.rows), Allowed: "at least 1"})
	return out
}
