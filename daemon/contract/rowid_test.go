package contract

import "testing"

func TestSplitRowID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		id   string
		row  int
		fail bool
	}{
		{in: "ab12-3f", id: "ab12-3f"},
		{in: "ab12-3f:0", id: "ab12-3f"},
		{in: "ab12-3f:17", id: "ab12-3f", row: 17},
		{in: "order:x", id: "order:x"},
		{in: "a:b:2", id: "a:b", row: 2},
		{in: "trailing:", id: "trailing:"},
		{in: ":3", fail: true},
		{in: "", fail: true},
		{in: "x:99999999999999999999999", fail: true},
	} {
		id, row, err := SplitRowID(tc.in)
		if (err != nil) != tc.fail || id != tc.id || row != tc.row {
			t.Errorf("SplitRowID(%q) = %q, %d, %v", tc.in, id, row, err)
		}
	}
}
