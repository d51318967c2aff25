package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kiln-edge/kiln/daemon/config"
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

type colKind uint8

const (
	colUnknown colKind = iota
	colNumber
	colString
)

func (k colKind) String() string {
	switch k {
	case colNumber:
		return TypeNumber
	case colString:
		return TypeString
	}
	return TypeNull
}

func kindOf(t string) colKind {
	switch t {
	case TypeNumber:
		return colNumber
	case TypeString:
		return colString
	}
	return colUnknown
}

type colStats struct {
	kind     colKind
	inferred bool // kind comes from this batch, not from the accepted versions
	nulls    int64
	values   int64
	seen     int64 // numeric values offered to the reservoir
	sample   []float64
	cats     map[string]*int64
	highCard bool
	rng      uint64
	rangeMin float64
	rangeMax float64
	ranged   bool
}

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
	hashes               []uint64
	violations           []*Violation
	byRule               map[string]*Violation
	nullFrac, dupFrac    float64

	trainW, holdoutW io.Writer
	file             string
	line             int64
	skipRows         bool // this file's header is wrong: rows are counted and split only

	fields  [][]byte
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
		trainW:   trainW,
		holdoutW: holdoutW,
	}
	if kind == "data" && spec.Evaluate.Holdout.File == "" {
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
	if v := t.byRule[rule]; v != nil {
		v.Count++
		return
	}
	v := &Violation{Rule: rule, File: t.file, Line: t.line, Column: column, Observed: observed, Allowed: allowed, Count: 1}
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
// wrong with it, so a released batch has all its rows), then the checks.
func (t *tabular) row(rec []byte) {
	t.rows++
	h := xxh64(rec, t.seed)
	w := t.trainW
	if t.fraction > 0 && float64(h>>11)/(1<<53) < t.fraction {
		w = t.holdoutW
		t.holdout++
	} else {
		t.train++
	}
	_, _ = w.Write(rec)
	_, _ = w.Write([]byte{'\n'})
	if t.rules.MaxDuplicateFraction != nil {
		t.hashes = append(t.hashes, h)
	}
	if t.skipRows || t.header == nil {
		return
	}
	switch t.format {
	case config.FormatCSV:
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
	if isNull(v, quotedString) {
		t.nulls++
		c.nulls++
		if i == t.labelIdx {
			t.fail("label_missing", name, `""`, "a label on every row")
		}
		return
	}
	c.values++
	if i == t.labelIdx {
		if t.allowed != nil && !t.allowed[string(v)] {
			t.fail("labels", name, clipValue(string(v)), strings.Join(t.rules.Labels, ", "))
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

// offer puts a numeric value in the column's reservoir sample. The random stream is seeded by
// the column name, so the same data always gives the same profile (and manifest digest).
func (c *colStats) offer(v []byte) {
	c.seen++
	if len(c.sample) < sampleSize {
		x, _ := strconv.ParseFloat(string(v), 64)
		c.sample = append(c.sample, x)
		return
	}
	c.rng ^= c.rng << 13
	c.rng ^= c.rng >> 7
	c.rng ^= c.rng << 17
	if j := c.rng % uint64(c.seen); j < sampleSize { //nolint:gosec // seen counts values offered: positive after the increment above
		x, _ := strconv.ParseFloat(string(v), 64)
		c.sample[j] = x
	}
}

func (c *colStats) count(v []byte) {
	if c.highCard {
		return
	}
	if c.cats == nil {
		c.cats = map[string]*int64{}
	}
	if n := c.cats[string(v)]; n != nil {
		*n++ // a lookup with string(v) does not allocate; an assignment would
		return
	}
	if len(c.cats) >= maxCategories {
		c.highCard, c.cats = true, nil
		return
	}
	one := int64(1)
	c.cats[string(v)] = &one
}

var nullWords = []string{"null", "na", "n/a", "nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "none"}

// isNull: empty, null and NaN/inf spellings count against max_null_fraction.
func isNull(v []byte, quotedString bool) bool {
	if len(v) > 0 && (v[0] >= '0' && v[0] <= '9' || v[0] >= 'a' && v[0] <= 'h' || v[0] >= 'A' && v[0] <= 'H') {
		return false // the fast path: no null spelling starts so
	}
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return true
	}
	if len(v) > 9 {
		return false
	}
	for _, w := range nullWords {
		if len(w) == len(v) && strings.EqualFold(w, string(v)) {
			return true
		}
	}
	return false
}

// isNumber accepts decimal floats as strconv.ParseFloat does, without allocating:
// [+-]digits[.digits][(e|E)[+-]digits], with surrounding spaces.
func isNumber(v []byte) bool {
	v = bytes.TrimSpace(v)
	i, n := 0, len(v)
	if i < n && (v[i] == '+' || v[i] == '-') {
		i++
	}
	digits := 0
	for i < n && v[i] >= '0' && v[i] <= '9' {
		i++
		digits++
	}
	if i < n && v[i] == '.' {
		i++
		for i < n && v[i] >= '0' && v[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < n && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < n && (v[i] == '+' || v[i] == '-') {
			i++
		}
		ed := 0
		for i < n && v[i] >= '0' && v[i] <= '9' {
			i++
			ed++
		}
		if ed == 0 {
			return false
		}
	}
	return i == n
}

// splitCSV splits one record on commas, unquoting quoted fields (RFC 4180: "" is a quote).
// The fields alias rec or t.scratch and live until the next call.
func (t *tabular) splitCSV(rec []byte) ([][]byte, bool) {
	fields := t.fields[:0]
	if bytes.IndexByte(rec, '"') < 0 {
		for {
			i := bytes.IndexByte(rec, ',')
			if i < 0 {
				fields = append(fields, rec)
				break
			}
			fields = append(fields, rec[:i])
			rec = rec[i+1:]
		}
		t.fields = fields
		return fields, true
	}
	t.scratch = t.scratch[:0]
	type span struct{ a, b int }
	var spans []span
	for {
		if len(rec) > 0 && rec[0] == '"' {
			a := len(t.scratch)
			rec = rec[1:]
			for {
				i := bytes.IndexByte(rec, '"')
				if i < 0 {
					return nil, false
				}
				t.scratch = append(t.scratch, rec[:i]...)
				rec = rec[i+1:]
				if len(rec) > 0 && rec[0] == '"' {
					t.scratch = append(t.scratch, '"')
					rec = rec[1:]
					continue
				}
				break
			}
			spans = append(spans, span{a, len(t.scratch)})
			if len(rec) == 0 {
				break
			}
			if rec[0] != ',' {
				return nil, false
			}
			rec = rec[1:]
			continue
		}
		i := bytes.IndexByte(rec, ',')
		end := i
		if i < 0 {
			end = len(rec)
		}
		if bytes.IndexByte(rec[:end], '"') >= 0 {
			return nil, false
		}
		a := len(t.scratch)
		t.scratch = append(t.scratch, rec[:end]...)
		spans = append(spans, span{a, len(t.scratch)})
		if i < 0 {
			break
		}
		rec = rec[i+1:]
	}
	for _, s := range spans {
		fields = append(fields, t.scratch[s.a:s.b])
	}
	t.fields = fields
	return fields, true
}

// jsonPair is one key and raw value of a flat JSON object.
type jsonPair struct {
	key string
	val []byte
	str bool // the value is a JSON string (val is unquoted)
}

func (t *tabular) jsonRow(pairs []jsonPair) {
	seen := 0
	for j, p := range pairs {
		i := j
		if i >= len(t.header) || t.header[i] != p.key {
			var ok bool
			if i, ok = t.colIdx[p.key]; !ok {
				t.fail("columns", p.key, "an unknown key", strings.Join(t.header, ","))
				continue
			}
		}
		seen++
		t.cell(i, p.val, p.str)
	}
	if seen < len(t.header) {
		// Missing keys are null values.
		missing := len(t.header) - seen
		t.cells += int64(missing)
		t.nulls += int64(missing)
		if t.labelIdx >= 0 {
			has := false
			for _, p := range pairs {
				if p.key == t.label {
					has = true
					break
				}
			}
			if !has {
				t.fail("label_missing", t.label, "no key", "a label on every row")
			}
		}
	}
}

// scanObject reads a flat JSON object ({"k": v, ...}) without building a map. Nested objects
// and arrays are kept as raw text values. It returns false on any syntax error.
func scanObject(b []byte, pairs []jsonPair) ([]jsonPair, bool) {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, false
	}
	if !json.Valid(b) {
		return nil, false
	}
	i := 1
	skipWS := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
			i++
		}
	}
	readString := func() ([]byte, bool) {
		start := i
		i++
		esc := false
		for i < len(b) {
			switch b[i] {
			case '\\':
				esc = true
				i += 2
				continue
			case '"':
				i++
				raw := b[start:i]
				if !esc {
					return raw[1 : len(raw)-1], true
				}
				var s string
				if json.Unmarshal(raw, &s) != nil {
					return nil, false
				}
				return []byte(s), true
			}
			i++
		}
		return nil, false
	}
	skipWS()
	if i < len(b) && b[i] == '}' {
		return pairs, true
	}
	for i < len(b) {
		skipWS()
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		k, ok := readString()
		if !ok {
			return nil, false
		}
		skipWS()
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i++
		skipWS()
		if i >= len(b) {
			return nil, false
		}
		p := jsonPair{key: string(k)}
		switch b[i] {
		case '"':
			v, ok := readString()
			if !ok {
				return nil, false
			}
			p.val, p.str = v, true
		case '{', '[':
			start, depth, inStr := i, 0, false
			for ; i < len(b); i++ {
				c := b[i]
				if inStr {
					switch c {
					case '\\':
						i++
					case '"':
						inStr = false
					}
					continue
				}
				if c == '"' {
					inStr = true
				} else if c == '{' || c == '[' {
					depth++
				} else if c == '}' || c == ']' {
					depth--
					if depth == 0 {
						i++
						break
					}
				}
			}
			p.val, p.str = b[start:i], true
		default:
			start := i
			for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' {
				i++
			}
			p.val = b[start:i]
			if string(p.val) == "true" || string(p.val) == "false" {
				p.str = true
			}
		}
		pairs = append(pairs, p)
		skipWS()
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			return pairs, true
		}
		return nil, false
	}
	return nil, false
}

// finish runs the batch-wide rules and returns the schema and profile.
func (t *tabular) finish() ([]Column, map[string]ColumnProfile) {
	r := t.rules
	if t.header == nil && t.rows == 0 && len(t.violations) == 0 {
		t.file, t.line = "", 0
		t.fail("rows", "", "no header and no rows", "a header line")
	}
	t.file, t.line = "", 0
	if t.rows < int64(r.Rows.Min) {
		t.fail("rows", "", strconv.FormatInt(t.rows, 10)+" rows", fmt.Sprintf("at least %d", r.Rows.Min))
	}
	if r.Rows.Max > 0 && t.rows > int64(r.Rows.Max) {
		t.fail("rows", "", strconv.FormatInt(t.rows, 10)+" rows", fmt.Sprintf("at most %d", r.Rows.Max))
	}
	if r.MaxNullFraction != nil && t.cells > 0 {
		f := float64(t.nulls) / float64(t.cells)
		t.nullFrac = f
		if f > *r.MaxNullFraction {
			t.fail("max_null_fraction", "", fmtFrac(f)+fmt.Sprintf(" (%d of %d cells)", t.nulls, t.cells), "at most "+fmtFrac(*r.MaxNullFraction))
		}
	}
	if r.MaxDuplicateFraction != nil && t.rows > 0 {
		slices.Sort(t.hashes)
		dups := 0
		for i := 1; i < len(t.hashes); i++ {
			if t.hashes[i] == t.hashes[i-1] {
				dups++
			}
		}
		f := float64(dups) / float64(t.rows)
		t.dupFrac = f
		if f > *r.MaxDuplicateFraction {
			t.fail("max_duplicate_fraction", "", fmtFrac(f)+fmt.Sprintf(" (%d of %d rows)", dups, t.rows), "at most "+fmtFrac(*r.MaxDuplicateFraction))
		}
		t.hashes = nil
	}
	// Violations counted per rule keep their count; those without one read better without.
	schema := make([]Column, len(t.header))
	prof := map[string]ColumnProfile{}
	for i, name := range t.header {
		c := &t.cols[i]
		k := c.kind
		if i == t.labelIdx && c.values > 0 {
			k = colString
		}
		schema[i] = Column{Name: name, Type: k.String()}
		p := ColumnProfile{Values: c.values, Nulls: c.nulls, HighCard: c.highCard}
		if len(c.sample) > 0 {
			p.Sample = slices.Clone(c.sample)
			slices.Sort(p.Sample)
		}
		if len(c.cats) > 0 {
			p.Categories = make(map[string]int64, len(c.cats))
			for k, n := range c.cats {
				p.Categories[k] = *n
			}
		}
		prof[name] = p
	}
	return schema, prof
}

func fmtFrac(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// checks lists every rule the batch was held to, passed or not, for the report.
func (t *tabular) checks() []Check {
	r := t.rules
	var out []Check
	add := func(rule, observed, allowed string) {
		out = append(out, Check{Rule: rule, OK: t.byRule[rule] == nil, Observed: observed, Allowed: allowed})
	}
	add("schema", strings.Join(t.header, ","), "the accepted versions' columns")
	add("columns", "", "as many fields as the header")
	add("types", "", "the accepted versions' column types")
	add("max_line_length", "", fmt.Sprintf("%d bytes", MaxLineLength))
	if t.label != "" {
		add("label_column", t.label, "present")
	}
	rows := fmt.Sprintf("at least %d", r.Rows.Min)
	if r.Rows.Max > 0 {
		rows += fmt.Sprintf(", at most %d", r.Rows.Max)
	}
	add("rows", strconv.FormatInt(t.rows, 10), rows)
	if r.MaxNullFraction != nil {
		add("max_null_fraction", fmtFrac(t.nullFrac), "at most "+fmtFrac(*r.MaxNullFraction))
	}
	if r.MaxDuplicateFraction != nil {
		add("max_duplicate_fraction", fmtFrac(t.dupFrac), "at most "+fmtFrac(*r.MaxDuplicateFraction))
	}
	if len(r.Labels) > 0 {
		add("labels", "", strings.Join(r.Labels, ", "))
	}
	if len(r.Ranges) > 0 {
		add("ranges", "", fmt.Sprintf("%d columns bounded", len(r.Ranges)))
	}
	for i := range out {
		if v := t.byRule[out[i].Rule]; v != nil {
			out[i].Observed = v.Observed
		}
	}
	return out
}
