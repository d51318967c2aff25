package contract

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeRequest(t *testing.T) {
	rows := [][]string{{"2.1", "71.5"}, {"0.2", " 41 "}, {"1e3", "-0"}}
	tests := []struct {
		protocol        string
		wantPath, wantC string
		wantBody        string
	}{
		{ProtocolSageMaker, "/invocations", "text/csv", "2.1,71.5\n0.2,\" 41 \"\n1e3,-0\n"}, // the CSV writer quotes a leading space
		{"", "/invocations", "text/csv", "2.1,71.5\n0.2,\" 41 \"\n1e3,-0\n"},
		{ProtocolV2, "/v2/models/pumps/infer", "application/json",
			`{"inputs":[{"name":"input","datatype":"FP64","shape":[3,2],"data":[2.1,71.5,0.2,41,1000,-0]}]}`},
	}
	for _, tt := range tests {
		got, err := EncodeRequest(tt.protocol, "pumps", rows)
		if err != nil {
			t.Fatalf("EncodeRequest(%q): %v", tt.protocol, err)
		}
		if got.Path != tt.wantPath || got.ContentType != tt.wantC || string(got.Body) != tt.wantBody {
			t.Errorf("EncodeRequest(%q) = %s %s %q; want %s %s %q", tt.protocol, got.Path, got.ContentType, got.Body, tt.wantPath, tt.wantC, tt.wantBody)
		}
		if n := CountRows(got.ContentType, got.Body); n != len(rows) {
			t.Errorf("CountRows(EncodeRequest(%q)) = %d, want %d", tt.protocol, n, len(rows))
		}
	}
	// A field that needs quoting is quoted: the CSV writer, not string joins.
	got, err := EncodeRequest(ProtocolSageMaker, "p", [][]string{{"a,b", `say "hi"`}})
	if err != nil || string(got.Body) != "\"a,b\",\"say \"\"hi\"\"\"\n" {
		t.Errorf("EncodeRequest(quoting) = %q, %v", got.Body, err)
	}
	got, err = EncodeRequest(ProtocolV2, "p", nil)
	if err != nil || string(got.Body) != `{"inputs":[{"name":"input","datatype":"FP64","shape":[0,0],"data":[]}]}` {
		t.Errorf("EncodeRequest(v2, no rows) = %q, %v", got.Body, err)
	}
}

func TestEncodeRequestErrors(t *testing.T) {
	tests := []struct {
		name, protocol string
		rows           [][]string
		want           string
	}{
		{"unknown protocol", "grpc", [][]string{{"1"}}, `unknown protocol "grpc"`},
		{"ragged rows", ProtocolSageMaker, [][]string{{"1", "2"}, {"3"}}, "row 2 has 1 values, row 1 has 2"},
		{"ragged rows v2", ProtocolV2, [][]string{{"1"}, {"2"}, {"3", "4"}}, "row 3 has 2 values, row 1 has 1"},
		{"not a number", ProtocolV2, [][]string{{"1", "2"}, {"3", "hot"}}, `row 2 column 2: v2 sends finite FP64 numbers, got "hot"`},
		{"NaN", ProtocolV2, [][]string{{"NaN"}}, `row 1 column 1`},
		{"infinity", ProtocolV2, [][]string{{"1e999"}}, `row 1 column 1`},
		{"empty value", ProtocolV2, [][]string{{""}}, `row 1 column 1`},
	}
	for _, tt := range tests {
		_, err := EncodeRequest(tt.protocol, "p", tt.rows)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: EncodeRequest = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestRequestRoundTrip: DecodeRequest undoes EncodeRequest, in both
// protocols, for the values each protocol can carry.
func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name, protocol string
		rows           [][]string
	}{
		{"csv numbers", ProtocolSageMaker, [][]string{{"2.1", "71.5"}, {"0.2", "41"}}},
		{"csv text, quotes, commas, spaces", ProtocolSageMaker, [][]string{{"a,b", `"q"`, " x "}, {"", "multi\nline", "é"}}},
		{"csv one column", ProtocolSageMaker, [][]string{{"1"}, {"2"}, {"3"}}},
		{"v2 numbers", ProtocolV2, [][]string{{"2.1", "71.5"}, {"0.2", "41"}, {"-3", "1e+21"}}},
		{"v2 tiny and huge", ProtocolV2, [][]string{{"1e-07", "1.7976931348623157e+308"}}},
		{"v2 one column", ProtocolV2, [][]string{{"1"}, {"2"}}},
	}
	for _, tt := range tests {
		req, err := EncodeRequest(tt.protocol, "pumps", tt.rows)
		if err != nil {
			t.Fatalf("%s: EncodeRequest: %v", tt.name, err)
		}
		got, err := DecodeRequest(tt.protocol, req.ContentType, req.Body)
		if err != nil || !reflect.DeepEqual(got, tt.rows) {
			t.Errorf("%s: DecodeRequest(EncodeRequest(rows)) = %q, %v; want %q", tt.name, got, err, tt.rows)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, protocol, contentType, body string
		want                              [][]string
	}{
		{"csv crlf, no final newline, blank lines", ProtocolSageMaker, "text/csv; charset=utf-8", "0.2,41\r\n\r\n2.1,71.5", [][]string{{"0.2", "41"}, {"2.1", "71.5"}}},
		{"csv without content type", ProtocolSageMaker, "", "1,2\n", [][]string{{"1", "2"}}},
		{"csv empty", ProtocolSageMaker, "text/csv", "", nil},
		{"v2 numbers in g format", ProtocolV2, "application/json",
			`{"id":"r","inputs":[{"name":"input","shape":[2,2],"datatype":"FP64","data":[2.10,41,1.0e2,100000000000000000000000]}]}`,
			[][]string{{"2.1", "41"}, {"100", "1e+23"}}},
		{"v2 nested data", ProtocolV2, "application/json",
			`{"inputs":[{"name":"input","shape":[2,2],"datatype":"FP64","data":[[0.2,41],[1,2]]}]}`,
			[][]string{{"0.2", "41"}, {"1", "2"}}},
		{"v2 one-dimensional shape", ProtocolV2, "application/json",
			`{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","data":[1,2,3]}]}`,
			[][]string{{"1"}, {"2"}, {"3"}}},
		{"v2 input named input among others", ProtocolV2, "",
			`{"inputs":[{"name":"mask","shape":[1,1],"data":[true]},{"name":"input","shape":[1,2],"data":["a",5]}]}`,
			[][]string{{"a", "5"}}},
		{"v2 zero rows", ProtocolV2, "application/json", `{"inputs":[{"name":"input","shape":[0,2],"data":[]}]}`, [][]string{}},
	}
	for _, tt := range tests {
		got, err := DecodeRequest(tt.protocol, tt.contentType, []byte(tt.body))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: DecodeRequest = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	tests := []struct {
		name, protocol, contentType, body, want string
	}{
		{"unknown protocol", "kserve", "", "1", "unknown protocol"},
		{"csv sent as json", ProtocolSageMaker, "application/json", "1,2", `Content-Type "application/json": want text/csv`},
		{"json sent as csv", ProtocolV2, "text/csv", "{}", `Content-Type "text/csv": want application/json`},
		{"csv ragged", ProtocolSageMaker, "text/csv", "1,2\n3\n", "record on line 2: wrong number of fields"},
		{"csv bad quote", ProtocolSageMaker, "text/csv", "1,\"2\n", "sagemaker request"},
		{"v2 not json", ProtocolV2, "", "1,2", "v2 request"},
		{"v2 no inputs", ProtocolV2, "", `{"inputs":[]}`, `0 inputs and none named "input"`},
		{"v2 two inputs, neither input", ProtocolV2, "", `{"inputs":[{"name":"a"},{"name":"b"}]}`, `2 inputs and none named "input"`},
		{"v2 bad shape", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,2,3],"data":[1,2,3,4,5,6]}]}`, "shape [1 2 3]: want [rows, features]"},
		{"v2 negative shape", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[-1,2],"data":[1,2]}]}`, "shape [-1 2]"},
		{"v2 count mismatch", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[2,2],"data":[1,2,3]}]}`, "has 3 values; shape [2 2] needs 4"},
		{"v2 null", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,2],"data":[1,null]}]}`, "element 2 is null"},
		{"v2 object", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,1],"data":[{"a":1}]}]}`, "element 1 is an object"},
		{"v2 data not an array", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,1],"data":5}]}`, "not an array"},
		{"v2 data missing", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,1]}]}`, "data: missing"},
		{"v2 number out of range", ProtocolV2, "", `{"inputs":[{"name":"input","shape":[1,1],"data":[1e999]}]}`, "number 1e999"},
	}
	for _, tt := range tests {
		got, err := DecodeRequest(tt.protocol, tt.contentType, []byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: DecodeRequest = %q, %v; want an error containing %q", tt.name, got, err, tt.want)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name, protocol, body string
		want                 []string
	}{
		{"sagemaker", ProtocolSageMaker, "failing\nnormal\nfailing\n", []string{"failing", "normal", "failing"}},
		{"sagemaker crlf, no final newline", "", "a\r\nb", []string{"a", "b"}},
		{"sagemaker keeps a line whole", ProtocolSageMaker, "0.1,0.9\n0.8,0.2\n", []string{"0.1,0.9", "0.8,0.2"}},
		{"sagemaker empty line inside is a prediction", ProtocolSageMaker, "a\n\nb\n", []string{"a", "", "b"}},
		{"sagemaker empty", ProtocolSageMaker, "\n", nil},
		{"v2 strings", ProtocolV2, `{"model_name":"pumps","outputs":[{"name":"label","shape":[2],"datatype":"BYTES","data":["failing","normal"]}]}`, []string{"failing", "normal"}},
		{"v2 numbers, label not first", ProtocolV2, `{"outputs":[{"name":"proba","data":[0.5]},{"name":"label","shape":[3,1],"datatype":"FP64","data":[[1.0],[2.50],[1e21]]}]}`, []string{"1", "2.5", "1e+21"}},
		{"v2 booleans", ProtocolV2, `{"outputs":[{"name":"label","datatype":"BOOL","data":[true,false]}]}`, []string{"true", "false"}},
	}
	for _, tt := range tests {
		got, err := ParseAnswer(tt.protocol, []byte(tt.body))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: ParseAnswer = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestParseAnswerMalformed(t *testing.T) {
	tests := []struct {
		name, protocol, body, want string
	}{
		{"unknown protocol", "grpc", "a\n", "unknown protocol"},
		{"v2 not json", ProtocolV2, "failing\nnormal\n", "v2 answer: invalid character"},
		{"v2 error body", ProtocolV2, `{"error":"boom"}`, `v2 answer has no output "label"`},
		{"v2 no label output", ProtocolV2, `{"outputs":[{"name":"proba","data":[0.1]}]}`, `no output "label"`},
		{"v2 null prediction", ProtocolV2, `{"outputs":[{"name":"label","data":["a",null]}]}`, "element 2 is null"},
		{"v2 object prediction", ProtocolV2, `{"outputs":[{"name":"label","data":[{}]}]}`, "element 1 is an object"},
		{"v2 data not an array", ProtocolV2, `{"outputs":[{"name":"label","data":"a"}]}`, "not an array"},
		{"v2 outputs not an array", ProtocolV2, `{"outputs":{"name":"label"}}`, "v2 answer"},
	}
	for _, tt := range tests {
		got, err := ParseAnswer(tt.protocol, []byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseAnswer = %q, %v; want an error containing %q", tt.name, got, err, tt.want)
		}
	}
}

// TestV2NumbersOneSpelling: a number the client wrote in a request and the
// same number in an answer or a JSONL label come out spelled the same, so a
// logged request, a late label and a prediction join on equal strings.
func TestV2NumbersOneSpelling(t *testing.T) {
	for _, lit := range []string{"3", "3.0", "3e0", "0.30e1"} {
		rows, err := DecodeRequest(ProtocolV2, "", []byte(`{"inputs":[{"name":"input","shape":[1,1],"data":[`+lit+`]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		preds, err := ParseAnswer(ProtocolV2, []byte(`{"outputs":[{"name":"label","data":[`+lit+`]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		var l Labelled
		if err := l.AddJSONL(strings.NewReader(`{"x":`+lit+`,"y":`+lit+`}`), "y", "f"); err != nil {
			t.Fatal(err)
		}
		if rows[0][0] != "3" || preds[0] != "3" || l.Rows[0][0] != "3" || l.Labels[0] != "3" {
			t.Errorf("%s: request %q, answer %q, jsonl row %q label %q; want 3 everywhere", lit, rows[0][0], preds[0], l.Rows[0][0], l.Labels[0])
		}
	}
	// And the v2 request kiln writes is plain JSON any decoder reads.
	req, err := EncodeRequest(ProtocolV2, "p", [][]string{{"3.0"}})
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(req.Body, &v); err != nil {
		t.Fatal(err)
	}
}
