package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// MaxLineLength is the longest line (CSV record or JSONL object) ingest reads; a longer one
// quarantines its batch (rule max_line_length). It bounds the memory one row can take.
const MaxLineLength = 1 << 20

// sampleSize is how many values of each numeric feature a dataset's profile keeps (a
// deterministic reservoir sample); drift is measured on these samples.
const sampleSize = 1024

// maxCategories is how many distinct values of a string column a profile counts; a column
// with more is high-cardinality and not checked for drift.
const maxCategories = 64

// Column types of a schema.
const (
	TypeNumber = "number"
	TypeString = "string"
	TypeNull   = "null" // every value of the batch was null: the type is not known yet
)

// Column is one column of a dataset's schema.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Violation is the first failure of one rule: where it was found and what was observed
// against what is allowed. It is what REASON.json and the validation report carry.
type Violation struct {
	Rule     string `json:"rule"`
	File     string `json:"file,omitempty"`
	Line     int64  `json:"line,omitempty"`
	Column   string `json:"column,omitempty"`
	Observed string `json:"observed"`
	Allowed  string `json:"allowed"`
	Count    int64  `json:"count,omitempty"` // how many rows or cells broke the rule, where counted
}

func (v Violation) String() string {
	var b strings.Builder
	b.WriteString(v.Rule)
	if v.File != "" {
		fmt.Fprintf(&b, " in %s", quoteName(v.File))
		if v.Line > 0 {
			fmt.Fprintf(&b, " line %d", v.Line)
		}
	}
	if v.Column != "" {
		fmt.Fprintf(&b, " column %q", v.Column)
	}
	fmt.Fprintf(&b, ": observed %s, allowed %s", v.Observed, v.Allowed)
	return b.String()
}

// ColumnProfile summarises one column of a dataset, enough to measure drift against it later
// without reading the data again.
type ColumnProfile struct {
	Values     int64            `json:"values"` // non-null cells
	Nulls      int64            `json:"nulls"`
	Sample     []float64        `json:"sample,omitempty"`     // numeric: sorted reservoir sample
	Categories map[string]int64 `json:"categories,omitempty"` // string: value counts
	HighCard   bool             `json:"high_cardinality,omitempty"`
}

const (
	colUnknown colKind = iota
	colNumber
	colString
)

// tabular parses one batch of CSV or JSONL, file after file, and does everything that needs
// to see every row in the one pass: the column checks, the profile, and the split into train
// and holdout parts, written to the two sinks as it goes.
type tabular struct {
	format   string
	label    string
	rules    *config.Validation
	seed     uint64
	fraction float64
	refCols  []Column // the schema this batch must match; nil: any

	header   []string
	headerCS []byte // the CSV header line as written into parts
	colIdx   map[string]int
	labelIdx int
	cols     []colStats
	allowed  map[string]bool

	rows, train, holdout int64
	cells, nulls         int64
	hashes               []uint64 // max_duplicate_fraction: one key per row (see dupKey)
	rowHash              uint64   // the current row's split hash
	dupDone              bool     // the current row's duplicate key is in hashes
	dupBuf               []byte
	violations           []*Violation
	byRule               map[string]*Violation
	nullFrac, dupFrac    float64
	nullCol              string // the column with the largest null fraction

	trainW, holdoutW io.Writer
	file             string
	files            []string // every file parsed, in order
	line             int64
	skipRows         bool // this file's header is wrong: rows are counted and split only

	// Feedback (see feedback.go): the batch's type, decided by its first header, and the
	// rows left out of the version (counted per rule, the first of each kept).
	feedback   bool
	fbType     string
	labelsOnly bool // an images pipeline's feedback: late labels are all it may be
	leftOut    []*Violation
	leftBy     map[string]*Violation
	dropRow    bool                // the row being checked is left out
	ids        map[uint64]struct{} // late labels: xxh64 of each request id taken so far
	usable     int64               // late labels: rows stored
	labelsBuf  []byte
	seen       []bool   // jsonl: the columns the current object set
	jvals      [][]byte // jsonl: the current object's values in header order
	jstr       []bool   // jsonl: which of them are JSON strings

	fields  [][]byte
	quoted  bool // the record splitCSV split last had a quote
	pairs   []jsonPair
	scratch []byte
	rec     []byte
}

func newTabular(spec *config.Pipeline, kind string, refCols []Column, trainW, holdoutW io.Writer) *tabular {
	t := &tabular{
		format:   spec.Data.Format,
		label:    spec.Data.Label,
		rules:    &spec.Data.Validate,
		seed:     uint64(spec.Evaluate.Holdout.Seed), //nolint:gosec // the seed's bits, as they are: a negative seed is a seed like any other
		refCols:  refCols,
		labelIdx: -1,
		byRule:   map[string]*Violation{},
		leftBy:   map[string]*Violation{},
		trainW:   trainW,
		holdoutW: holdoutW,
		feedback: kind == string(storage.KindFeedback),
	}
	// Feedback rows are split exactly as data rows are, so a retrain can be gated on
	// feedback it never saw and a row held out of the data stays held out.
	if (kind == string(storage.KindData) || t.feedback) && spec.Evaluate.Holdout.File == "" {
		t.fraction = spec.Evaluate.Holdout.Fraction
	}
	if len(t.rules.Labels) > 0 {
		t.allowed = map[string]bool{}
		for _, l := range t.rules.Labels {
			t.allowed[l] = true
		}
	}
	return t
}

// fail records a violation; only the first of each rule is kept, the rest are counted.
func (t *tabular) fail(rule, column, observed, allowed string) {
	if t.fbType == storage.FeedbackLabels && rule == "max_line_length" {
		t.rows++
		t.leave(rule, column, observed, allowed) // one label line lost, not the file
		return
	}
	if v := t.byRule[rule]; v != nil {
		v.Count++
		return
	}
	v := &Violation{Rule: rule, File: t.file, Line: t.line, Column: column, Observed: oneLine(observed), Allowed: oneLine(allowed), Count: 1}
	t.byRule[rule] = v
	t.violations = append(t.violations, v)
}

func clipValue(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

// parse reads one file of the batch to its end. Only read errors are returned; what is wrong
// with the data is recorded as violations and reading goes on, so every byte is still hashed
// into the blob store and the report can say how much was wrong.
func (t *tabular) parse(name string, r io.Reader) error {
	t.file, t.line, t.skipRows = name, 0, false
	t.files = append(t.files, name)
	br := bufio.NewReaderSize(r, MaxLineLength)
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			t.line++
			t.fail("max_line_length", "", fmt.Sprintf("more than %d bytes", MaxLineLength), fmt.Sprintf("%d bytes", MaxLineLength))
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		t.line++
		rec := trimEOL(line)
		if first {
			rec = bytes.TrimPrefix(rec, []byte("\uFEFF"))
		}
		if t.format == config.FormatCSV && bytes.Count(rec, []byte{'"'})%2 == 1 {
			// A quoted field runs over the line end: gather the whole record.
			t.rec = append(t.rec[:0], rec...)
			for bytes.Count(t.rec, []byte{'"'})%2 == 1 && err == nil {
				var more []byte
				more, err = br.ReadSlice('\n')
				if errors.Is(err, bufio.ErrBufferFull) || len(t.rec)+len(more) > MaxLineLength {
					t.fail("max_line_length", "", fmt.Sprintf("more than %d bytes", MaxLineLength), fmt.Sprintf("%d bytes", MaxLineLength))
					for errors.Is(err, bufio.ErrBufferFull) {
						_, err = br.ReadSlice('\n')
					}
					t.rec = t.rec[:0]
					break
				}
				if err != nil && err != io.EOF {
					return err
				}
				t.rec = append(t.rec, '\n')
				t.rec = append(t.rec, trimEOL(more)...)
			}
			if len(t.rec) == 0 {
				if err == io.EOF {
					return nil
				}
				continue
			}
			rec = t.rec
		}
		if len(bytes.TrimSpace(rec)) > 0 {
			if first {
				first = false
				t.headerLine(rec)
			} else {
				t.row(rec)
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// headerLine handles a file's first record: the CSV header, or for JSONL the first object,
// whose keys name the columns (and which is also a row).
func (t *tabular) headerLine(rec []byte) {
	var names []string
	switch t.format {
	case config.FormatCSV:
		fields, ok := t.splitCSV(rec)
		if !ok {
			t.fail("csv_syntax", "", clipValue(string(rec)), "RFC 4180 quoting")
			t.skipRows = true
			return
		}
		for _, f := range fields {
			names = append(names, strings.TrimSpace(string(f)))
		}
	case config.FormatJSONL:
		pairs, ok := scanObject(rec, nil)
		if !ok {
			t.fail("json_syntax", "", clipValue(string(rec)), "one JSON object per line")
			t.skipRows = true
			return
		}
		for _, p := range pairs {
			names = append(names, p.key)
		}
	}
	if t.feedback {
		if !t.feedbackHeader(names) {
			t.skipRows = true
			return
		}
		if t.fbType == storage.FeedbackLabels {
			if t.format == config.FormatJSONL {
				t.row(rec) // the first object is a row too
			}
			return
		}
	}
	if t.header == nil && t.format == config.FormatJSONL && t.refCols != nil {
		// The accepted versions' key order is the pipeline's column order (in the schema,
		// and in RowKey), whatever order a later object writes its keys in.
		ref := make([]string, len(t.refCols))
		for i, c := range t.refCols {
			ref[i] = c.Name
		}
		if slices.Equal(slices.Sorted(slices.Values(ref)), slices.Sorted(slices.Values(names))) {
			names = ref
		}
	}
	if t.header == nil {
		t.setHeader(names, rec)
	} else if t.format == config.FormatCSV && !slices.Equal(names, t.header) {
		t.fail("schema", "", strings.Join(names, ","), strings.Join(t.header, ",")+" (the batch's first file)")
		t.skipRows = true
	}
	if t.format == config.FormatJSONL && !t.skipRows {
		t.row(rec)
	}
}

func (t *tabular) setHeader(names []string, rec []byte) {
	t.header = names
	t.colIdx = make(map[string]int, len(names))
	for i, n := range names {
		if n == "" {
			t.fail("schema", fmt.Sprintf("#%d", i+1), `""`, "a column name")
		} else if _, dup := t.colIdx[n]; dup {
			t.fail("schema", n, "the name twice", "unique column names")
		}
		t.colIdx[n] = i
	}
	if t.format == config.FormatCSV {
		t.headerCS = append(append([]byte(nil), rec...), '\n')
		// Parts start with the header, so each part is a CSV file of its own.
		_, _ = t.trainW.Write(t.headerCS)
		_, _ = t.holdoutW.Write(t.headerCS)
	}
	if t.refCols != nil {
		want := make([]string, len(t.refCols))
		for i, c := range t.refCols {
			want[i] = c.Name
		}
		got := names
		if t.format == config.FormatJSONL {
			// Key order carries no meaning in JSON.
			want, got = slices.Sorted(slices.Values(want)), slices.Sorted(slices.Values(names))
		}
		if !slices.Equal(want, got) {
			t.fail("schema", "", strings.Join(names, ","), strings.Join(want, ",")+" (the accepted versions' columns)")
			t.skipRows = true
		}
	}
	if i, ok := t.colIdx[t.label]; ok {
		t.labelIdx = i
	} else if t.label != "" {
		t.fail("label_column", t.label, strings.Join(names, ","), "a column named "+strconv.Quote(t.label))
	}
	refType := map[string]string{}
	for _, c := range t.refCols {
		refType[c.Name] = c.Type
	}
	t.cols = make([]colStats, len(names))
	for i := range t.cols {
		c := &t.cols[i]
		c.rng = xxh64([]byte(names[i]), 0x6b696c6e) | 1
		c.kind = kindOf(refType[names[i]])
		if r, ok := t.rules.Ranges[names[i]]; ok {
			c.ranged = true
			c.rangeMin, c.rangeMax = math.Inf(-1), math.Inf(1)
			if r.Min != nil {
				c.rangeMin = *r.Min
			}
			if r.Max != nil {
				c.rangeMax = *r.Max
			}
		}
	}
	for col := range t.rules.Ranges {
		if _, ok := t.colIdx[col]; !ok {
			t.fail("ranges", col, "no such column", "a column named "+strconv.Quote(col))
		}
	}
}

// row handles one data record: the split first (every row lands in a part, whatever is
// wrong with it, so a released batch has all its rows), then the checks. Feedback rows are
// checked first: a row whose label is missing or outside the set is left out (and counted)
// rather than quarantining the file.
func (t *tabular) row(rec []byte) {
	if t.fbType == storage.FeedbackLabels {
		t.labelRow(rec)
		return
	}
	t.rows++
	if t.feedback {
		t.dropRow = false
		t.check(rec)
		if !t.dropRow {
			t.split(rec)
		}
		return
	}
	t.split(rec)
	t.dupDone = false
	t.check(rec)
	if t.rules.MaxDuplicateFraction != nil && !t.dupDone {
		// A row that did not parse is compared as written.
		t.hashes = append(t.hashes, t.rowHash)
	}
}

// dupKey records the row's duplicate key: its values in header order, each as written after
// unquoting, so "a",1 and a,1 are one row, and so are two JSON objects that list the same keys
// in another order. vals[i] is nil for a JSON key the object lacks.
func (t *tabular) dupKey(vals [][]byte, str []bool) {
	if t.rules.MaxDuplicateFraction == nil || t.feedback {
		return
	}
	b := t.dupBuf[:0]
	for i, v := range vals {
		switch {
		case v == nil && str != nil: // a CSV field is never missing, only empty
			b = append(b, 0)
		case str != nil && str[i]:
			b = append(b, 2)
		default:
			b = append(b, 1)
		}
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	t.dupBuf = b
	t.hashes = append(t.hashes, xxh64(b, 0x6475706b))
	t.dupDone = true
}

// csvDupKey records a CSV row's duplicate key without copying it where it can: its fields
// joined by commas, hashed as split hashes the row (so an unquoted row's key is its split
// hash, and "a",1 is a,1), unless a field holds a comma, quote or line break, which only
// dupKey's length-prefixed encoding keeps apart. A row that did not parse is keyed by its
// split hash too (see row), and can match no joined row: it holds a quote or has another
// field count.
func (t *tabular) csvDupKey(fields [][]byte) {
	if t.rules.MaxDuplicateFraction == nil || t.feedback {
		return
	}
	if !t.quoted {
		t.hashes = append(t.hashes, t.rowHash)
		t.dupDone = true
		return
	}
	b := t.dupBuf[:0]
	for i, f := range fields {
		if bytes.ContainsAny(f, ",\"\r\n") {
			t.dupKey(fields, nil)
			return
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f...)
	}
	t.dupBuf = b
	t.hashes = append(t.hashes, xxh64(b, t.seed))
	t.dupDone = true
}

// heldOut is the split rule of rows and images alike: h, the xxh64 of a row or of an image's
// bytes with evaluate.holdout.seed, as a fraction of 2^64, below the holdout fraction.
func heldOut(h uint64, fraction float64) bool {
	return fraction > 0 && float64(h>>11)/(1<<53) < fraction
}

// split writes a row to the train or holdout part: holdout when xxh64(row, seed)/2^64 is
// below the fraction.
func (t *tabular) split(rec []byte) {
	h := xxh64(rec, t.seed)
	w := t.trainW
	if heldOut(h, t.fraction) {
		w = t.holdoutW
		t.holdout++
	} else {
		t.train++
	}
	_, _ = w.Write(rec)
	_, _ = w.Write([]byte{'\n'})
	t.rowHash = h
}

// check runs the per-row rules.
func (t *tabular) check(rec []byte) {
	if t.skipRows || t.header == nil {
		return
	}
	switch t.format {
	case config.FormatCSV:
		if t.plainRow(rec) {
			t.csvDupKey(nil)
			return
		}
		fields, ok := t.splitCSV(rec)
		if !ok {
			t.fail("csv_syntax", "", clipValue(string(rec)), "RFC 4180 quoting")
			return
		}
		if len(fields) != len(t.header) {
			t.fail("columns", "", fmt.Sprintf("%d fields", len(fields)), fmt.Sprintf("%d fields (the header's)", len(t.header)))
			return
		}
		for i, f := range fields {
			t.cell(i, f, false)
		}
		t.csvDupKey(fields)
	case config.FormatJSONL:
		pairs, ok := scanObject(rec, t.pairs[:0])
		t.pairs = pairs
		if !ok {
			t.fail("json_syntax", "", clipValue(string(rec)), "one JSON object per line")
			return
		}
		t.jsonRow(pairs)
	}
}

// cell checks one value. quotedString marks a JSON string, which is text even when it looks
// like a number.
func (t *tabular) cell(i int, v []byte, quotedString bool) {
	t.cells++
	c := &t.cols[i]
	name := t.header[i]
	if !numberStart(v) && isNull(v, quotedString) {
		t.nulls++
		c.nulls++
		if i == t.labelIdx {
			t.badLabel("label_missing", name, `""`, "a label on every row")
		}
		return
	}
	c.values++
	if i == t.labelIdx {
		if t.allowed != nil && !t.allowed[string(v)] {
			t.badLabel("labels", name, clipValue(string(v)), strings.Join(t.rules.Labels, ", "))
		}
		c.count(v)
		return
	}
	num := !quotedString && isNumber(v)
	if c.kind == colUnknown {
		c.kind, c.inferred = colString, true
		if num {
			c.kind = colNumber
		}
	}
	if c.kind == colNumber && !num && c.inferred {
		// Inferred from this batch alone: a column is numeric only when all its values are.
		c.kind, c.sample, c.seen = colString, nil, 0
	}
	if c.kind == colString {
		c.count(v)
		return
	}
	if !num {
		t.fail("types", name, clipValue(string(v)), "a number (the column is numeric in the accepted versions)")
		return
	}
	if c.ranged {
		x, _ := strconv.ParseFloat(string(v), 64)
		if x < c.rangeMin || x > c.rangeMax {
			t.fail("ranges", name, string(bytes.TrimSpace(v)), rangeText(c.rangeMin, c.rangeMax))
		}
	}
	c.offer(v)
}

func rangeText(lo, hi float64) string {
	switch {
	case math.IsInf(lo, -1):
		return fmt.Sprintf("at most %v", hi)
	case math.IsInf(hi, 1):
		return fmt.Sprintf("at least %v", lo)
	}
	return fmt.Sprintf("%v to %v", lo, hi)
}
