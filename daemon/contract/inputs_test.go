package contract

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"reflect"
	"strings"
	"testing"
)

// testImage encodes a w x h image of one gray level as PNG or JPEG.
func testImage(t testing.TB, format string, w, h int, gray uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = gray
	}
	img.Set(0, 0, color.Gray{Y: gray ^ 0xff}) // not all one value
	var b bytes.Buffer
	var err error
	if format == "png" {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestEncode(t *testing.T) {
	pngA, jpgB := testImage(t, "png", 4, 3, 10), testImage(t, "jpeg", 2, 2, 200)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name, protocol string
		in             Inputs
		want           []Request
	}{
		{"csv as EncodeRequest", ProtocolSageMaker, Inputs{Rows: [][]string{{"1", "2"}}},
			[]Request{{"/invocations", "text/csv", []byte("1,2\n")}}},
		{"jsonl sagemaker: keys in Columns' order, numbers, null, strings", ProtocolSageMaker,
			Inputs{Format: "jsonl", Columns: []string{"vib", "a<b", "state"}, Rows: [][]string{
				{"2.10", " 41 ", "worn"}, {"1e3", "", `say "hi"`}, {"NaN", "-0", "true"}}},
			[]Request{{"/invocations", "application/jsonlines", []byte(
				`{"vib":2.1,"a<b":41,"state":"worn"}` + "\n" +
					`{"vib":1000,"a<b":null,"state":"say \"hi\""}` + "\n" +
					`{"vib":"NaN","a<b":-0,"state":"true"}` + "\n")}}},
		{"jsonl no rows", ProtocolSageMaker, Inputs{Format: "jsonl", Columns: []string{"x"}},
			[]Request{{"/invocations", "application/jsonlines", nil}}},
		{"jsonl v2: FP64 like csv", ProtocolV2, Inputs{Format: "jsonl", Columns: []string{"b", "a"}, Rows: [][]string{{"1", "2"}}},
			[]Request{{"/v2/models/pumps/infer", "application/json",
				[]byte(`{"inputs":[{"name":"input","datatype":"FP64","shape":[1,2],"data":[1,2]}]}`)}}},
		{"images sagemaker: one request an image", ProtocolSageMaker, Inputs{Format: "images", Images: [][]byte{pngA, jpgB}},
			[]Request{{"/invocations", "application/x-image", pngA}, {"/invocations", "application/x-image", jpgB}}},
		{"images sagemaker, none: no request", ProtocolSageMaker, Inputs{Format: "images"}, []Request{}},
		{"images v2: BYTES base64", ProtocolV2, Inputs{Format: "images", Images: [][]byte{pngA, jpgB}},
			[]Request{{"/v2/models/pumps/infer", "application/json",
				[]byte(`{"inputs":[{"name":"input","datatype":"BYTES","shape":[2],"data":["` + b64(pngA) + `","` + b64(jpgB) + `"]}]}`)}}},
	}
	for _, tt := range tests {
		got, err := Encode(tt.protocol, "pumps", tt.in)
		if err != nil {
			t.Errorf("%s: Encode: %v", tt.name, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: Encode = %d requests, want %d", tt.name, len(got), len(tt.want))
			continue
		}
		for i := range got {
			if got[i].Path != tt.want[i].Path || got[i].ContentType != tt.want[i].ContentType || !bytes.Equal(got[i].Body, tt.want[i].Body) {
				t.Errorf("%s: request %d = %s %s %.200q; want %s %s %.200q", tt.name, i+1, got[i].Path, got[i].ContentType, got[i].Body,
					tt.want[i].Path, tt.want[i].ContentType, tt.want[i].Body)
			}
			if n := CountRows(got[i].ContentType, got[i].Body); n != tt.in.Len()/len(got) {
				t.Errorf("%s: CountRows(request %d) = %d, want %d", tt.name, i+1, n, tt.in.Len()/len(got))
			}
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	pngA := testImage(t, "png", 2, 2, 1)
	tests := []struct {
		name, protocol string
		in             Inputs
		want           string
	}{
		{"unknown format", ProtocolSageMaker, Inputs{Format: "parquet"}, `unknown data format "parquet"`},
		{"unknown protocol", "grpc", Inputs{}, `unknown protocol "grpc"`},
		{"jsonl without columns", ProtocolSageMaker, Inputs{Format: "jsonl", Rows: [][]string{{"1"}}}, "need the feature columns' names"},
		{"jsonl ragged row", ProtocolSageMaker, Inputs{Format: "jsonl", Columns: []string{"a", "b"}, Rows: [][]string{{"1", "2"}, {"3"}}},
			"row 2 has 1 values for 2 columns [a b]"},
		{"jsonl column twice", ProtocolSageMaker, Inputs{Format: "jsonl", Columns: []string{"a", "a"}, Rows: [][]string{{"1", "2"}}}, `column "a" twice`},
		{"jsonl v2 not a number", ProtocolV2, Inputs{Format: "jsonl", Columns: []string{"a"}, Rows: [][]string{{"1"}, {"x"}}}, "row 2 column 1"},
		{"not an image", ProtocolSageMaker, Inputs{Format: "images", Images: [][]byte{pngA, []byte("GIF89a....")}},
			`image 2: neither PNG nor JPEG (10 bytes, starting "GIF89a..")`},
		{"empty image v2", ProtocolV2, Inputs{Format: "images", Images: [][]byte{pngA, pngA, {}}}, "image 3: empty"},
		{"images with rows", ProtocolV2, Inputs{Format: "images", Images: [][]byte{pngA}, Rows: [][]string{{"1"}}}, "images inputs with 1 rows"},
		{"rows with images", ProtocolSageMaker, Inputs{Rows: [][]string{{"1"}}, Images: [][]byte{pngA}}, "csv inputs with 1 images"},
	}
	for _, tt := range tests {
		_, err := Encode(tt.protocol, "p", tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Encode = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestEncodeDecodeInputs: DecodeInputs undoes Encode, request by request;
// JSON Lines columns come back sorted.
func TestEncodeDecodeInputs(t *testing.T) {
	imgs := [][]byte{testImage(t, "png", 3, 3, 7), testImage(t, "jpeg", 8, 8, 99), testImage(t, "png", 1, 1, 0)}
	jsonl := Inputs{Format: "jsonl", Columns: []string{"vib", "temp", "state"}, Rows: [][]string{{"2.1", "71.5", "worn"}, {"0.2", "", "a\nb"}}}
	sorted := Inputs{Format: "jsonl", Columns: []string{"state", "temp", "vib"}, Rows: [][]string{{"worn", "71.5", "2.1"}, {"a\nb", "", "0.2"}}}
	tests := []struct {
		name, protocol string
		in             Inputs
		want           []Inputs // one a request
	}{
		{"jsonl sagemaker", ProtocolSageMaker, jsonl, []Inputs{sorted}},
		{"images sagemaker", ProtocolSageMaker, Inputs{Format: "images", Images: imgs},
			[]Inputs{{Format: "images", Images: imgs[:1]}, {Format: "images", Images: imgs[1:2]}, {Format: "images", Images: imgs[2:]}}},
		{"images v2", ProtocolV2, Inputs{Format: "images", Images: imgs}, []Inputs{{Format: "images", Images: imgs}}},
		{"csv v2", ProtocolV2, Inputs{Rows: [][]string{{"1", "2"}}}, []Inputs{{Format: "csv", Rows: [][]string{{"1", "2"}}}}},
	}
	for _, tt := range tests {
		reqs, err := Encode(tt.protocol, "p", tt.in)
		if err != nil || len(reqs) != len(tt.want) {
			t.Fatalf("%s: Encode = %d requests, %v", tt.name, len(reqs), err)
		}
		for i, r := range reqs {
			got, err := DecodeInputs(tt.protocol, r.ContentType, r.Body)
			if err != nil || !reflect.DeepEqual(got, tt.want[i]) {
				t.Errorf("%s: DecodeInputs(request %d) = %+.60v, %v; want %+.60v", tt.name, i+1, got, err, tt.want[i])
			}
			rows, err := DecodeRequest(tt.protocol, r.ContentType, r.Body)
			if tt.in.Format == "images" {
				if !errors.Is(err, ErrNotTabular) || rows != nil {
					t.Errorf("%s: DecodeRequest(request %d) = %q, %v; want ErrNotTabular", tt.name, i+1, rows, err)
				}
			} else if err != nil || !reflect.DeepEqual(rows, tt.want[i].Rows) {
				t.Errorf("%s: DecodeRequest(request %d) = %q, %v; want %q", tt.name, i+1, rows, err, tt.want[i].Rows)
			}
		}
	}
}

func TestDecodeInputs(t *testing.T) {
	tests := []struct {
		name, protocol, contentType, body string
		want                              Inputs
	}{
		{"jsonl: keys of every line, sorted; a missing key is empty; blank lines, BOM, CRLF", ProtocolSageMaker, "application/jsonlines; charset=utf-8",
			"\ufeff{\"b\":1,\"a\":true}\r\n\r\n{\"c\":\"x\",\"b\":2.50}\n\n",
			Inputs{Format: "jsonl", Columns: []string{"a", "b", "c"}, Rows: [][]string{{"true", "1", ""}, {"", "2.5", "x"}}}},
		{"jsonl empty", ProtocolSageMaker, "application/jsonlines", "\n \n", Inputs{Format: "jsonl"}},
		{"image/png is an image", ProtocolSageMaker, "image/png", "\x89PNG", Inputs{Format: "images", Images: [][]byte{[]byte("\x89PNG")}}},
		{"csv by default", ProtocolSageMaker, "", "1\n", Inputs{Format: "csv", Rows: [][]string{{"1"}}}},
		{"v2 2-D BYTES are rows", ProtocolV2, "", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[1,2],"data":["a","b"]}]}`,
			Inputs{Format: "csv", Rows: [][]string{{"a", "b"}}}},
	}
	for _, tt := range tests {
		got, err := DecodeInputs(tt.protocol, tt.contentType, []byte(tt.body))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: DecodeInputs = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}

func TestDecodeInputsErrors(t *testing.T) {
	tests := []struct {
		name, protocol, contentType, body, want string
	}{
		{"jsonl bad line", ProtocolSageMaker, "application/jsonlines", "{\"a\":1}\n\n{\"a\":", "jsonlines request line 3: "},
		{"jsonl not an object", ProtocolSageMaker, "application/jsonlines", "{\"a\":1}\n[1]\n", "jsonlines request line 2: not a JSON object"},
		{"jsonl nested value", ProtocolSageMaker, "application/jsonlines", `{"a":{"b":1}}`, `line 1: key "a": want a flat value, got an object`},
		{"jsonl key twice", ProtocolSageMaker, "application/jsonlines", `{"a":1,"a":2}`, `line 1: key "a" twice`},
		{"empty image", ProtocolSageMaker, "application/x-image", "", "sagemaker image request: empty body"},
		{"unknown content type", ProtocolSageMaker, "application/octet-stream", "x", `Content-Type "application/octet-stream": want text/csv, application/jsonlines or application/x-image`},
		{"v2 jsonlines", ProtocolV2, "application/jsonlines", "{}", `want application/json`},
		{"v2 image not base64", ProtocolV2, "", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[2],"data":["aGk=","%%"]}]}`, `input "input" image 2: illegal base64`},
		{"v2 image count", ProtocolV2, "", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[3],"data":["aGk="]}]}`, `has 1 images; shape [3] says 3`},
		{"v2 image not strings", ProtocolV2, "", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":[1]}]}`, `want an array of base64 strings`},
	}
	for _, tt := range tests {
		got, err := DecodeInputs(tt.protocol, tt.contentType, []byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: DecodeInputs = %+v, %v; want an error containing %q", tt.name, got, err, tt.want)
		}
	}
}

// TestDecodeRequestNotTabular: an image request in either protocol has no
// rows, and DecodeRequest says so without decoding v2's base64.
func TestDecodeRequestNotTabular(t *testing.T) {
	for _, c := range []struct{ protocol, ct, body string }{
		{ProtocolSageMaker, "application/x-image", "\xff\xd8\xff..."},
		{ProtocolSageMaker, "image/jpeg", "\xff\xd8\xff..."},
		{ProtocolSageMaker, "Application/X-Image; q=1", "\x89PNG..."},
		{ProtocolV2, "application/json", `{"inputs":[{"name":"input","datatype":"BYTES","shape":[2],"data":["not base64 at all","x"]}]}`},
	} {
		rows, err := DecodeRequest(c.protocol, c.ct, []byte(c.body))
		if !errors.Is(err, ErrNotTabular) || rows != nil {
			t.Errorf("DecodeRequest(%s, %q) = %q, %v; want ErrNotTabular", c.protocol, c.ct, rows, err)
		}
	}
}

func TestLabelledImages(t *testing.T) {
	a, b := testImage(t, "png", 2, 2, 1), testImage(t, "jpeg", 2, 2, 2)
	var l Labelled
	l.AddImage("cat", a)
	l.AddImage("dog", b)
	if l.Len() != 2 || !reflect.DeepEqual(l.Labels, []string{"cat", "dog"}) {
		t.Fatalf("Len = %d, Labels = %q", l.Len(), l.Labels)
	}
	if in := l.Inputs("images"); in.Format != "images" || in.Len() != 2 || !bytes.Equal(in.Images[1], b) || in.Rows != nil {
		t.Errorf("Inputs(images) = %+.40v", in)
	}
	rows := Labelled{Columns: []string{"x"}, Rows: [][]string{{"1"}}, Labels: []string{"y"}}
	if in := rows.Inputs("jsonl"); in.Format != "jsonl" || !reflect.DeepEqual(in.Columns, []string{"x"}) || in.Len() != 1 || in.Images != nil {
		t.Errorf("Inputs(jsonl) = %+v", in)
	}
}
