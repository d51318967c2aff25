package ingest

import "testing"

// Known answers of the reference implementation (xxhsum -H64), so the split
// can never drift with a refactor.
func TestXXH64KnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		seed uint64
		want uint64
	}{
		{"", 0, 0xef46db3751d8e999},
		{"a", 0, 0xd24ec4f1a98c6e5b},
		{"abc", 0, 0x44bc2cf5ad770999},
		{"Nobody inspects the spammish repetition", 0, 0xfbcea83c8a378bf1},
	} {
		if got := xxh64([]byte(tc.in), tc.seed); got != tc.want {
			t.Errorf("xxh64(%q, %d) = %#x, want %#x", tc.in, tc.seed, got, tc.want)
		}
	}
}
