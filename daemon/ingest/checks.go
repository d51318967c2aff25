package ingest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/storage"
)

// finish runs the batch-wide rules and returns the schema and profile.
func (t *tabular) finish() ([]Column, map[string]ColumnProfile) {
	r := t.rules
	if t.feedback {
		t.finishFeedback()
	}
	if t.fbType == storage.FeedbackLabels {
		return []Column{{Name: "request_id", Type: TypeString}, {Name: "label", Type: TypeString}}, nil
	}
	if t.header == nil && t.rows == 0 && len(t.violations) == 0 {
		t.file, t.line = "", 0
		t.fail("rows", "", "no header and no rows", "a header line")
	}
	t.file, t.line = "", 0
	// Feedback is not held to the data's batch-size and duplicate rules: a handful of
	// labelled rows, some of them repeated, is ordinary feedback.
	if !t.feedback && t.rows < int64(r.Rows.Min) {
		t.fail("rows", "", strconv.FormatInt(t.rows, 10)+" rows", fmt.Sprintf("at least %d", r.Rows.Min))
	}
	if !t.feedback && r.Rows.Max > 0 && t.rows > int64(r.Rows.Max) {
		t.fail("rows", "", strconv.FormatInt(t.rows, 10)+" rows", fmt.Sprintf("at most %d", r.Rows.Max))
	}
	if r.MaxNullFraction != nil {
		t.nullRule(*r.MaxNullFraction)
	}
	if r.MaxDuplicateFraction != nil && t.rows > 0 && !t.feedback {
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

// nullRule holds max_null_fraction per column, as TFDV's min_fraction and Great Expectations'
// expect_column_values_to_not_be_null(mostly) do: a fraction over all cells would let two
// columns 30% empty pass a 5% limit when the other columns are full. The worst column is the
// one reported (and the one the check shows); Count says how many columns broke the limit.
func (t *tabular) nullRule(limit float64) {
	worst, worstFrac := -1, -1.0
	var over []int
	for i := range t.cols {
		c := &t.cols[i]
		n := c.nulls + c.values
		if n == 0 {
			continue
		}
		f := float64(c.nulls) / float64(n)
		if f > worstFrac {
			worst, worstFrac = i, f
		}
		if f > limit {
			over = append(over, i)
		}
	}
	if worst < 0 {
		return
	}
	t.nullFrac, t.nullCol = worstFrac, t.header[worst]
	if len(over) == 0 {
		return
	}
	allowed := "at most " + fmtFrac(limit) + " per column"
	c := &t.cols[worst]
	t.fail("max_null_fraction", t.header[worst], fmtFrac(worstFrac)+fmt.Sprintf(" (%d of %d cells)", c.nulls, c.nulls+c.values), allowed)
	for _, i := range over {
		if i != worst {
			t.fail("max_null_fraction", t.header[i], "", allowed) // only counted: the first is kept
		}
	}
}

// oneLine escapes the control characters of a violation's text (a CSV header may quote a
// newline into a column name) so a reason stays one line in logs, events and the CLI.
// Found by FuzzTabular and FuzzFeedback.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func fmtFrac(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// checks lists every rule the batch was held to, passed or not, for the report.
func (t *tabular) checks() []Check {
	r := t.rules
	if t.fbType == storage.FeedbackLabels {
		return t.labelsChecks()
	}
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
	if t.feedback {
		add(RuleFeedbackColumns, strings.Join(t.header, ","), "the data's columns, or request_id,label")
		add(RuleNoUsableRows, fmt.Sprintf("%d of %d rows usable", t.usableRows(), t.rows), "at least 1")
	} else {
		add("rows", strconv.FormatInt(t.rows, 10), rows)
	}
	if r.MaxNullFraction != nil {
		obs := fmtFrac(t.nullFrac)
		if t.nullCol != "" {
			obs += " (column " + strconv.Quote(t.nullCol) + ", the emptiest)"
		}
		add("max_null_fraction", obs, "at most "+fmtFrac(*r.MaxNullFraction)+" per column")
	}
	if r.MaxDuplicateFraction != nil && !t.feedback {
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
			if v.Rule == "max_null_fraction" {
				out[i].Observed += " in column " + strconv.Quote(v.Column)
			}
		}
		if v := t.leftBy[out[i].Rule]; v != nil { // feedback: rows left out, not a failure
			out[i].Observed = fmt.Sprintf("%d rows left out (first: %s)", v.Count, v.Observed)
		}
	}
	return out
}
