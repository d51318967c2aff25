package main

import "strconv"

// plural says "1 pipeline", "2 pipelines", "0 pipelines": every count the CLI
// prints goes through it (a test fails on a format string that hard-codes
// a plural after a %d). Pass many for an irregular plural.
func plural[N ~int | ~int32 | ~int64 | ~uint | ~uint32 | ~uint64](n N, one string, many ...string) string {
	s := strconv.FormatInt(int64(n), 10) + " "
	switch {
	case n == 1:
		return s + one
	case len(many) > 0:
		return s + many[0]
	}
	return s + one + "s"
}
