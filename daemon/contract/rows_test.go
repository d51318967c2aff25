package contract

import (
	"strings"
	"testing"
)

func TestCountRows(t *testing.T) {
	v2 := `{"inputs":[{"name":"input","datatype":"FP64","shape":[3,2],"data":[1,2,3,4,5,6]}]}`
	tests := []struct {
		name, contentType, body string
		want                    int
	}{
		{"csv", "text/csv", "1,2\n3,4\n5,6\n", 3},
		{"csv final line without newline", "text/csv", "1,2\n3,4\n5,6", 3},
		{"csv blank lines", "text/csv", "\n1,2\n\n  \n3,4\n\n", 2},
		{"csv crlf", "text/csv", "1,2\r\n3,4\r\n\r\n", 2},
		{"csv with charset, any case", "Text/CSV; charset=utf-8", "1\n2\n", 2},
		{"csv empty", "text/csv", "", 0},
		{"csv one value", "text/csv", "5.1", 1},
		{"v2", "application/json", v2, 3},
		{"v2 with charset", "application/json; charset=utf-8", v2, 3},
		{"v2 shape after data", "application/json",
			`{"inputs":[{"data":[[1,"]"],{"shape":[9]}],"name":"x\"y","shape":[ 7 , 2 ],"datatype":"FP64"}]}`, 7},
		{"v2 inputs after other keys", "application/json",
			` { "id" : "r1", "parameters": {"a":[1,{"b":null}]}, "ok": true,` + "\n" + `"inputs": [ {"shape": [12,4]} ] }`, 12},
		{"v2 only the first input counts", "application/json",
			`{"inputs":[{"shape":[2,1]},{"shape":[5,1]}]}`, 2},
		{"v2 shape of one dimension", "application/json", `{"inputs":[{"shape":[4],"data":[1,2,3,4]}]}`, 4},
		{"v2 zero rows", "application/json", `{"inputs":[{"shape":[0,3],"data":[]}]}`, 0},
		{"v2 no inputs", "application/json", `{"outputs":[{"shape":[3]}]}`, 0},
		{"v2 empty inputs", "application/json", `{"inputs":[]}`, 0},
		{"v2 no shape", "application/json", `{"inputs":[{"data":[1,2]}]}`, 0},
		{"v2 empty shape", "application/json", `{"inputs":[{"shape":[]}]}`, 0},
		{"v2 negative shape", "application/json", `{"inputs":[{"shape":[-3,2]}]}`, 0},
		{"v2 fractional shape", "application/json", `{"inputs":[{"shape":[3.5,2]}]}`, 0},
		{"v2 string shape", "application/json", `{"inputs":[{"shape":["3",2]}]}`, 0},
		{"v2 cut short", "application/json", `{"inputs":[{"shape":[3`, 0},
		{"v2 not json", "application/json", `1,2,3`, 0},
		{"v2 not an object", "application/json", `[{"inputs":[{"shape":[3]}]}]`, 0},
		{"v2 unterminated string", "application/json", `{"inputs":[{"name":"abc`, 0},
		{"v2 empty", "application/json", ``, 0},
		{"jsonlines", "application/jsonlines", "{\"a\":1}\n\n{\"a\":2}\r\n  \n{\"a\":3}", 3},
		{"jsonlines empty", "application/jsonlines; charset=utf-8", "\n", 0},
		{"x-image", "application/x-image", "\x89PNG\r\n\x1a\n\n\n\n", 1},
		{"image/jpeg", "Image/JPEG", "\xff\xd8\xff\n", 1},
		{"image/png", "image/png", "\x89PNG", 1},
		{"image empty", "application/x-image", "", 0},
		{"v2 images", "application/json", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[2],"data":["aGk=","aGk="]}]}`, 2},
		{"unknown type", "application/octet-stream", "1\n2\n", 0},
		{"image/gif is no image kiln sends", "image/gif", "GIF89a", 0},
		{"no type", "", "1\n2\n", 0},
		{"csv-like type prefix", "text/csvx", "1\n2\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CountRows(tt.contentType, []byte(tt.body)); got != tt.want {
				t.Errorf("CountRows(%q, %q) = %d, want %d", tt.contentType, tt.body, got, tt.want)
			}
		})
	}
}

// TestCountRowsAllocs holds CountRows to the promise the prediction log
// relies on: it runs for every request and allocates nothing.
func TestCountRowsAllocs(t *testing.T) {
	csv := []byte(strings.Repeat("5.1,3.5,1.4,0.2\r\n", 500))
	v2 := []byte(`{"id":"x","inputs":[{"name":"input","datatype":"FP64","data":[` +
		strings.TrimSuffix(strings.Repeat("5.1,3.5,1.4,0.2,", 500), ",") + `],"shape":[500,4]}]}`)
	for _, c := range []struct {
		ct   string
		body []byte
		want int
	}{
		{"text/csv; charset=utf-8", csv, 500},
		{"application/json", v2, 500},
		{"application/json", []byte(`{"inputs":[{"shape":"bad"}]}`), 0},
		{"application/jsonlines", []byte(strings.Repeat(`{"a":5.1,"b":3.5}`+"\n", 500)), 500},
		{"application/x-image", csv, 1},
		{"image/jpeg", csv, 1},
	} {
		var got int
		allocs := testing.AllocsPerRun(100, func() { got = CountRows(c.ct, c.body) })
		if got != c.want {
			t.Errorf("CountRows(%q) = %d, want %d", c.ct, got, c.want)
		}
		if allocs != 0 {
			t.Errorf("CountRows(%q) allocates %v times a call, want 0", c.ct, allocs)
		}
	}
}

func BenchmarkCountRowsV2(b *testing.B) {
	body := []byte(`{"inputs":[{"name":"input","datatype":"FP64","data":[` +
		strings.TrimSuffix(strings.Repeat("5.1,3.5,1.4,0.2,", 500), ",") + `],"shape":[500,4]}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		CountRows("application/json", body)
	}
}
