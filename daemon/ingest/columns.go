package ingest

import (
	"bytes"
	"strconv"
	"strings"
)

type colKind uint8

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
