package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Content types of the requests of JSON Lines and images pipelines
// (SageMaker; an OIP v2 request is always application/json).
const (
	ContentTypeImage     = "application/x-image"
	ContentTypeJSONLines = "application/jsonlines"
)

// The data formats an Inputs holds: a pipeline spec's data.format ("files"
// pipelines serve no model kiln calls). "" means FormatCSV.
const (
	FormatCSV    = "csv"
	FormatJSONL  = "jsonl"
	FormatImages = "images"
)

// ErrNotTabular is DecodeRequest's answer for a request that holds images:
// it has no rows. Callers that look at rows (input drift, late-label joins)
// skip such records.
var ErrNotTabular = errors.New("the request holds images, not rows")

// Inputs is what one prediction call sends, in the pipeline's data format:
// rows for csv and jsonl (feature values in the order of Columns, which is
// the training order; Columns name the JSON Lines keys and may be nil for
// csv), the raw bytes of PNG or JPEG files for images.
type Inputs struct {
	Format  string
	Columns []string
	Rows    [][]string
	Images  [][]byte
}

// Len is how many predictions the inputs ask for: images or rows.
func (in Inputs) Len() int {
	if in.Format == FormatImages {
		return len(in.Images)
	}
	return len(in.Rows)
}

// slice is the inputs i..j-1, sharing the backing arrays.
func (in Inputs) slice(i, j int) Inputs {
	out := in
	if in.Format == FormatImages {
		out.Images = in.Images[i:j:j]
	} else {
		out.Rows = in.Rows[i:j:j]
	}
	return out
}

func checkFormat(format string) (string, error) {
	switch format {
	case FormatCSV, "":
		return FormatCSV, nil
	case FormatJSONL, FormatImages:
		return format, nil
	}
	return "", fmt.Errorf("unknown data format %q (want %s, %s or %s)", format, FormatCSV, FormatJSONL, FormatImages)
}

// Encode turns inputs into the requests pipeline's model server expects,
// in order. One request, except for sagemaker images, which SageMaker
// sends one image a request (Content-Type application/x-image, the body the
// file's bytes), so n images are n requests. The formats:
//
//	csv     as EncodeRequest.
//	jsonl   sagemaker: application/jsonlines, one object a row, keys Columns
//	        in that order; a value that parses as a finite number is a JSON
//	        number ('g' format), "" is null, anything else a string.
//	        v2: the FP64 tensor of EncodeRequest, columns in Columns' order.
//	images  v2: one BYTES tensor "input" of shape [images] whose elements
//	        are the files in standard base64 (kiln's convention: OIP's JSON
//	        form has no raw bytes).
//
// Every image must be a PNG or JPEG file (by its magic bytes); errors name
// the row or image, 1-based.
func Encode(protocol, pipeline string, in Inputs) ([]Request, error) {
	protocol, err := checkProtocol(protocol)
	if err != nil {
		return nil, err
	}
	format, err := checkFormat(in.Format)
	if err != nil {
		return nil, err
	}
	if format != FormatImages && len(in.Images) > 0 {
		return nil, fmt.Errorf("%s inputs with %d images: images go with format %s", format, len(in.Images), FormatImages)
	}
	switch format {
	case FormatCSV:
		r, err := EncodeRequest(protocol, pipeline, in.Rows)
		if err != nil {
			return nil, err
		}
		return []Request{r}, nil
	case FormatJSONL:
		if protocol == ProtocolV2 {
			r, err := EncodeRequest(protocol, pipeline, in.Rows)
			if err != nil {
				return nil, err
			}
			return []Request{r}, nil
		}
		body, err := encodeJSONLines(in.Columns, in.Rows)
		if err != nil {
			return nil, err
		}
		return []Request{{Path: "/invocations", ContentType: ContentTypeJSONLines, Body: body}}, nil
	}
	if len(in.Rows) > 0 {
		return nil, fmt.Errorf("images inputs with %d rows: rows go with format %s or %s", len(in.Rows), FormatCSV, FormatJSONL)
	}
	for i, img := range in.Images {
		if err := checkImage(img); err != nil {
			return nil, fmt.Errorf("image %d: %w", i+1, err)
		}
	}
	if protocol == ProtocolSageMaker {
		reqs := make([]Request, len(in.Images))
		for i, img := range in.Images {
			reqs[i] = Request{Path: "/invocations", ContentType: ContentTypeImage, Body: img}
		}
		return reqs, nil
	}
	data := make([]string, len(in.Images))
	for i, img := range in.Images {
		data[i] = base64.StdEncoding.EncodeToString(img)
	}
	body, err := json.Marshal(v2BytesRequest{Inputs: []v2BytesInput{{Name: "input", Datatype: "BYTES", Shape: []int{len(data)}, Data: data}}})
	if err != nil {
		return nil, err
	}
	return []Request{{Path: V2InferPath(pipeline), ContentType: ContentTypeJSON, Body: body}}, nil
}

// v2BytesRequest is the v2 request of an images pipeline, in the wire's
// field order.
type v2BytesRequest struct {
	Inputs []v2BytesInput `json:"inputs"`
}

type v2BytesInput struct {
	Name     string   `json:"name"`
	Datatype string   `json:"datatype"`
	Shape    []int    `json:"shape"`
	Data     []string `json:"data"`
}

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte("\xff\xd8\xff")
)

// checkImage accepts the two formats the contract names by their first
// bytes; decoding is the model server's job (and ingest's, for training).
func checkImage(b []byte) error {
	switch {
	case len(b) == 0:
		return errors.New("empty")
	case bytes.HasPrefix(b, pngMagic), bytes.HasPrefix(b, jpegMagic):
		return nil
	}
	head := b[:min(len(b), 8)]
	return fmt.Errorf("neither PNG nor JPEG (%d bytes, starting %q)", len(b), head)
}

// encodeJSONLines writes rows as JSON Lines keyed by cols.
func encodeJSONLines(cols []string, rows [][]string) ([]byte, error) {
	if len(cols) == 0 && len(rows) > 0 {
		return nil, errors.New("jsonl inputs need the feature columns' names (Inputs.Columns) for the keys")
	}
	for i, c := range cols {
		if slices.Contains(cols[:i], c) {
			return nil, fmt.Errorf("column %q twice", c)
		}
	}
	keys := make([][]byte, len(cols))
	for i, c := range cols {
		keys[i] = jsonString(c)
	}
	var b bytes.Buffer
	for i, r := range rows {
		if len(r) != len(cols) {
			return nil, fmt.Errorf("row %d has %d values for %d columns %v", i+1, len(r), len(cols), cols)
		}
		b.WriteByte('{')
		for j, v := range r {
			if j > 0 {
				b.WriteByte(',')
			}
			b.Write(keys[j])
			b.WriteByte(':')
			writeJSONValue(&b, v)
		}
		b.WriteString("}\n")
	}
	return b.Bytes(), nil
}

// writeJSONValue writes a row's value as JSON: the inverse of how
// DecodeRequest and Labelled.AddJSONL read one, except that true/false stay
// strings (a CSV cell cannot say which it was).
func writeJSONValue(b *bytes.Buffer, v string) {
	t := strings.TrimSpace(v)
	if t == "" {
		b.WriteString("null")
		return
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		return
	}
	b.Write(jsonString(v))
}

// jsonString is s as a JSON string, without the HTML escaping of
// json.Marshal (a key "a<b" stays readable).
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// DecodeInputs turns a logged request body back into inputs: the inverse
// of Encode, for one request. Content type "" is the protocol's first
// (sagemaker: text/csv). What comes back:
//
//	text/csv               Format csv, Rows (as DecodeRequest).
//	application/jsonlines  Format jsonl, Columns = every key of any line,
//	                       sorted (byte order: JSON objects are unordered),
//	                       Rows in that order; a key a line lacks is "" there
//	                       (as null). Values as Labelled.AddJSONL reads them.
//	an image (sagemaker)   Format images, Images = [body].
//	v2, 1-D BYTES input    Format images, the elements base64-decoded.
//	v2, anything else      Format csv, Rows (as DecodeRequest).
func DecodeInputs(protocol, contentType string, body []byte) (Inputs, error) {
	return decodeInputs(protocol, contentType, body, true)
}

// decodeInputs is DecodeInputs; without images it does not decode an
// image request's base64 (DecodeRequest only needs to know it is one).
func decodeInputs(protocol, contentType string, body []byte, images bool) (Inputs, error) {
	protocol, err := checkProtocol(protocol)
	if err != nil {
		return Inputs{}, err
	}
	mt := mediaType(contentType)
	if protocol == ProtocolV2 {
		if contentType != "" && mt != mediaJSON {
			return Inputs{}, fmt.Errorf("%s request with Content-Type %q: want %s", protocol, contentType, ContentTypeJSON)
		}
		return decodeV2(body, images)
	}
	switch {
	case contentType == "" || mt == mediaCSV:
		rows, err := decodeCSV(body)
		return Inputs{Format: FormatCSV, Rows: rows}, err
	case mt == mediaJSONLines:
		return decodeJSONLines(body)
	case mt == mediaImage:
		if len(body) == 0 {
			return Inputs{}, errors.New("sagemaker image request: empty body")
		}
		return Inputs{Format: FormatImages, Images: [][]byte{body}}, nil
	}
	return Inputs{}, fmt.Errorf("%s request with Content-Type %q: want %s, %s or %s", protocol, contentType,
		ContentTypeCSV, ContentTypeJSONLines, ContentTypeImage)
}

func decodeJSONLines(body []byte) (Inputs, error) {
	type line struct{ keys, vals []string }
	var lines []line
	seen := map[string]bool{}
	n := 0
	for rest := body; len(rest) > 0; {
		n++
		text := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			text, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		text = bytes.TrimSpace(text)
		if n == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(text) == 0 {
			continue
		}
		keys, vals, err := flatObject(text)
		if err != nil {
			return Inputs{}, fmt.Errorf("jsonlines request line %d: %w", n, err)
		}
		for _, k := range keys {
			seen[k] = true
		}
		lines = append(lines, line{keys, vals})
	}
	in := Inputs{Format: FormatJSONL}
	if len(lines) == 0 {
		return in, nil
	}
	in.Columns = slices.Sorted(maps.Keys(seen))
	index := make(map[string]int, len(in.Columns))
	for i, c := range in.Columns {
		index[c] = i
	}
	in.Rows = make([][]string, len(lines))
	for i, l := range lines {
		row := make([]string, len(in.Columns))
		for j, k := range l.keys {
			row[index[k]] = l.vals[j]
		}
		in.Rows[i] = row
	}
	return in, nil
}
