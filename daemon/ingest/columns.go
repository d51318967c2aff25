package ingest

import (
	"bytes"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
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
	// j is uniform in [0, seen): the high word of rng*seen (Lemire's reduction), a multiply
	// where rng % seen would divide, on every numeric value of the batch.
	if j, _ := bits.Mul64(c.rng, uint64(c.seen)); j < sampleSize { //nolint:gosec // seen counts values offered: positive after the increment above
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

// numberStart: v starts as a number does (a digit, or a sign or point and a digit), which
// no null spelling does; small enough to inline, so numbers skip isNull's loop.
func numberStart(v []byte) bool {
	return len(v) > 0 && (v[0]-'0' < 10 || len(v) > 1 && v[1]-'0' < 10 && (v[0] == '-' || v[0] == '+' || v[0] == '.'))
}

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
	if n := len(v); n == 0 || v[0] <= ' ' || v[0] >= utf8.RuneSelf || v[n-1] <= ' ' || v[n-1] >= utf8.RuneSelf {
		v = bytes.TrimSpace(v) // else there is nothing to trim: the common case, kept cheap
	}
	n := numberLen(v)
	return n > 0 && n == len(v)
}

// numberLen is the length of the longest prefix of v that is a decimal float
// ([+-]digits[.digits][(e|E)[+-]digits], at least one digit before the exponent), 0 if none.
func numberLen(v []byte) int {
	i := 0
	if i < len(v) && (v[i] == '+' || v[i] == '-') {
		i++
	}
	start := i
	for i < len(v) && v[i]-'0' < 10 {
		i++
	}
	digits := i - start
	if i < len(v) && v[i] == '.' {
		i++
		start = i
		for i < len(v) && v[i]-'0' < 10 {
			i++
		}
		digits += i - start
	}
	if digits == 0 {
		return 0
	}
	if i < len(v) && v[i]|0x20 == 'e' {
		j := i + 1
		if j < len(v) && (v[j] == '+' || v[j] == '-') {
			j++
		}
		start = j
		for j < len(v) && v[j]-'0' < 10 {
			j++
		}
		if j > start {
			i = j
		}
	}
	return i
}
