package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/contract"
)

type predictCmd struct {
	Pipeline string   `arg:"" help:"Pipeline name."`
	Files    []string `arg:"" optional:"" name:"file" help:"Images for an images pipeline; for a csv or jsonl pipeline one file to read instead of stdin (- is stdin)." placeholder:"FILE"`
	Protocol string   `help:"How to read the endpoint's answer for -o json: sagemaker or v2 (default: the pipeline's serve.protocol)." placeholder:"PROTOCOL"`
}

func (predictCmd) Help() string {
	return `What goes to the endpoint follows the pipeline's data.format.

csv (the default): CSV rows on stdin (or in a file argument), one per line.
The first line may be a header: kiln knows the columns the live model was
trained on, so a header is matched by name (columns in any order; the label
column and columns the model does not use are left out) and the rows go to
the endpoint in training order. Without a header the rows must be the
feature columns in training order.

jsonl: one JSON object per line on stdin (or in a file argument), keyed by
column name. The model's feature keys are picked out (the label and other
keys are left out; a missing one is an error naming the line) and sent as
JSON Lines (sagemaker) or as rows in training order (v2).

images: the PNG or JPEG files as arguments (told by their content). Each
image is one request (four at a time): application/x-image for sagemaker,
a one-image BYTES tensor for v2. The table is one line per image, the file
and its prediction; -o json is the predictions in the order of the files.

Examples:
  kiln predict pumps < rows.csv
  head -5 pumps.csv | kiln predict pumps        # header and label column are fine
  kiln predict pumps -o json < rows.csv         # ["failing","normal",...]
  kiln predict sensors readings.jsonl           # a jsonl pipeline
  kiln predict digits 7.png scans/3.jpg         # an images pipeline`
}

// Run sends the input through the pipeline's endpoint. Rows' answer is
// copied as it comes; with -o json it is read with the serving contract
// and printed as a JSON array, one prediction per row. Images are read
// one answer each.
func (c predictCmd) Run(e *cmdEnv) error {
	cl := e.client()
	p, err := cl.Pipeline(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	protocol := c.Protocol
	if protocol == "" {
		protocol = specProtocol(p.Spec)
	}
	if protocol != contract.ProtocolSageMaker && protocol != contract.ProtocolV2 {
		return fmt.Errorf("--protocol %q: want %s or %s", protocol, contract.ProtocolSageMaker, contract.ProtocolV2)
	}
	format := specFormat(p.Spec)
	if format == contract.FormatImages {
		return c.predictImages(e, protocol)
	}
	for _, f := range c.Files {
		if isImageFile(f) {
			return fmt.Errorf("%s is an image, but pipeline %s takes %s rows (its data.format); images go to an images pipeline", f, c.Pipeline, format)
		}
	}
	if len(c.Files) > 1 {
		return fmt.Errorf("pipeline %s takes %s rows from one file or stdin; got %s", c.Pipeline, format, plural(len(c.Files), "file"))
	}
	src, name := io.Reader(os.Stdin), "stdin"
	if len(c.Files) == 1 && c.Files[0] != "-" {
		f, err := os.Open(c.Files[0])
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // read only
		src, name = f, c.Files[0]
	}
	cols, label, err := featureSchema(e.ctx, cl, c.Pipeline)
	if err != nil {
		return err
	}
	var answer bytes.Buffer
	out := io.Writer(e.out)
	if e.json() {
		out = &answer
	}
	if format == contract.FormatJSONL {
		err = c.predictJSONL(e, src, name, cols, specProtocol(p.Spec), out)
	} else {
		err = c.predictCSV(e, src, name, cols, label, out)
	}
	if err != nil || !e.json() {
		return err
	}
	preds, err := contract.ParseAnswer(protocol, answer.Bytes())
	if err != nil {
		return fmt.Errorf("pipeline %s: %w", c.Pipeline, err)
	}
	if preds == nil {
		preds = []string{} // no rows: [], not null
	}
	return writeJSON(e.out, preds)
}

// predictCSV streams CSV rows to the endpoint, a header matched by name.
func (c predictCmd) predictCSV(e *cmdEnv, src io.Reader, name string, cols []string, label string, out io.Writer) error {
	rows, err := someRows(src, name)
	if err != nil {
		return err
	}
	rows, wait, err := matchHeader(rows, name, c.Pipeline, cols, label)
	if err != nil {
		return err
	}
	err = e.client().Predict(e.ctx, c.Pipeline, rows, out)
	if rerr := wait(); rerr != nil {
		return rerr // the input's mistake explains a cut request better
	}
	return err
}

// predictJSONL sends JSON Lines rows: the model's feature keys as JSON
// Lines for a sagemaker pipeline (servedBy, the spec's protocol, is what
// kilnd sends on), as CSV rows in training order for a v2 one (kilnd makes
// the FP64 tensor). Without known columns (no data yet) the first line's
// keys, sorted, are the columns.
func (c predictCmd) predictJSONL(e *cmdEnv, src io.Reader, name string, cols []string, servedBy string, out io.Writer) error {
	body, err := io.ReadAll(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	in, err := jsonlRows(body, name, cols)
	if err != nil {
		return err
	}
	if in.Len() == 0 {
		return fmt.Errorf("no rows in %s: give JSON Lines, one object per line (kiln predict %s < rows.jsonl)", name, c.Pipeline)
	}
	if servedBy == contract.ProtocolV2 {
		in.Format = contract.FormatCSV
	}
	reqs, err := contract.Encode(contract.ProtocolSageMaker, c.Pipeline, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return e.client().PredictBody(e.ctx, c.Pipeline, reqs[0].ContentType, bytes.NewReader(reqs[0].Body), out)
}

// jsonlRows reads JSON Lines into rows of cols' values; extra keys are
// left out, a missing one is an error naming the line. Values keep JSON's
// spelling (contract.Encode writes numbers back as numbers).
func jsonlRows(body []byte, name string, cols []string) (contract.Inputs, error) {
	in := contract.Inputs{Format: contract.FormatJSONL, Columns: cols}
	for n, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if n == 0 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		if len(line) == 0 {
			continue
		}
		var obj map[string]any
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
			if err == nil {
				err = errors.New("want one JSON object")
			}
			return in, fmt.Errorf("%s line %d: %v", name, n+1, err)
		}
		if in.Columns == nil {
			in.Columns = slices.Sorted(maps.Keys(obj))
		}
		row := make([]string, len(in.Columns))
		for i, col := range in.Columns {
			v, ok := obj[col]
			if !ok {
				return in, fmt.Errorf("%s line %d: no key %q (pipeline's model takes %s)", name, n+1, col, strings.Join(in.Columns, ","))
			}
			switch v := v.(type) {
			case json.Number:
				row[i] = string(v)
			case string:
				row[i] = v
			case bool:
				row[i] = strconv.FormatBool(v)
			case nil:
				row[i] = ""
			default:
				return in, fmt.Errorf("%s line %d: key %q: want a number, string, boolean or null", name, n+1, col)
			}
		}
		in.Rows = append(in.Rows, row)
	}
	return in, nil
}

// predictConcurrency is how many image requests kiln predict has in
// flight: one image a request, overlapped.
const predictConcurrency = contract.ImageConcurrency

// predictImages sends each file as one image request and prints one
// prediction per image. Every file is read and checked before any is sent.
func (c predictCmd) predictImages(e *cmdEnv, protocol string) error {
	if len(c.Files) == 0 {
		return fmt.Errorf("pipeline %s takes images: give the files (kiln predict %s image.png [image2.jpg ...])", c.Pipeline, c.Pipeline)
	}
	imgs := make([][]byte, len(c.Files))
	for i, f := range c.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if imageKind(b) == "" {
			return fmt.Errorf("%s: not a PNG or JPEG file; pipeline %s takes images", f, c.Pipeline)
		}
		imgs[i] = b
	}
	cl := e.client()
	preds := make([]string, len(imgs))
	errs := make([]error, len(imgs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(predictConcurrency, len(imgs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var answer bytes.Buffer
				err := cl.PredictBody(e.ctx, c.Pipeline, contract.ContentTypeImage, bytes.NewReader(imgs[i]), &answer)
				var got []string
				if err == nil {
					got, err = contract.ParseAnswer(protocol, answer.Bytes())
				}
				if err == nil && len(got) != 1 {
					err = fmt.Errorf("answered %s for one image", plural(len(got), "prediction"))
				}
				if err != nil {
					errs[i] = fmt.Errorf("%s: pipeline %s: %w", c.Files[i], c.Pipeline, err)
					continue
				}
				preds[i] = got[0]
			}
		}()
	}
	for i := range imgs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first file's, in the order given: one line
		}
	}
	if e.json() {
		return writeJSON(e.out, preds)
	}
	tw := table(e.out)
	for i, f := range c.Files {
		row(tw, f, preds[i])
	}
	return tw.Flush()
}

// isImageFile says whether path names a PNG or JPEG file: by its first
// bytes, else (unreadable) by its extension.
func isImageFile(path string) bool {
	if path == "-" {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".png", ".jpg", ".jpeg":
			return true
		}
		return false
	}
	defer func() { _ = f.Close() }() // read only
	head := make([]byte, 8)
	n, _ := io.ReadFull(f, head)
	return imageKind(head[:n]) != ""
}

// imageKind is "png" or "jpeg" by a file's magic bytes, else "".
func imageKind(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "jpeg"
	}
	return ""
}

// featureSchema is what the live model was trained on: the feature columns
// in training order, and the label, from the manifest of the newest data
// version in its run's window. With no live model it is the newest admitted
// data version's. No data at all gives no columns: then no header can be
// recognised and the rows go as they are.
func featureSchema(ctx context.Context, cl *apiclient.Client, pipeline string) ([]string, string, error) {
	var version string
	ms, err := cl.Models(ctx, pipeline)
	if err != nil {
		return nil, "", err
	}
	for _, m := range ms {
		if m.State != "live" {
			continue
		}
		r, err := cl.Run(ctx, m.Run)
		if err != nil {
			return nil, "", fmt.Errorf("live model %s: %w", m.ID, err)
		}
		if len(r.Datasets) > 0 {
			version = r.Datasets[len(r.Datasets)-1]
		}
	}
	if version == "" {
		ds, err := cl.Datasets(ctx, pipeline)
		if err != nil {
			return nil, "", err
		}
		var newest time.Time
		for _, d := range ds {
			if d.Kind == "data" && (d.State == "accepted" || d.State == "released") && !d.Created.Before(newest) {
				version, newest = d.ID, d.Created
			}
		}
	}
	if version == "" {
		return nil, "", nil
	}
	d, err := cl.Dataset(ctx, version)
	if err != nil {
		return nil, "", fmt.Errorf("dataset %s (the live model's data): %w", version, err)
	}
	man, _ := d.Manifest.(map[string]any)
	label, _ := man["label"].(string)
	schema, _ := man["schema"].([]any)
	var cols []string
	for _, c := range schema {
		col, _ := c.(map[string]any)
		if name, _ := col["name"].(string); name != "" && name != label {
			cols = append(cols, name)
		}
	}
	return cols, label, nil
}

// matchHeader looks at the first line. When it names any of the pipeline's
// columns (or its label) it is a header: the rows that follow are sent with
// the feature columns picked out by name, in training order, and a feature
// the header lacks is an error naming every missing one. Otherwise the
// input goes as it came. wait returns the first mistake found in the rows
// while they streamed (a line with the wrong number of fields, bad quoting),
// once the request is over.
func matchHeader(r io.Reader, name, pipeline string, cols []string, label string) (io.Reader, func() error, error) {
	none := func() error { return nil }
	if len(cols) == 0 {
		return r, none, nil
	}
	br := bufio.NewReader(r)
	first, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	all := io.MultiReader(strings.NewReader(first), br)
	header, perr := csv.NewReader(strings.NewReader(first)).Read()
	if perr != nil || !slices.ContainsFunc(header, func(h string) bool {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		return h == label || slices.Contains(cols, h)
	}) {
		return all, none, nil
	}
	at := make(map[string]int, len(header))
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := at[h]; dup {
			return nil, nil, fmt.Errorf("%s line 1: column %q appears twice in the header", name, h)
		}
		at[h] = i
	}
	pick := make([]int, len(cols))
	var missing []string
	for i, c := range cols {
		j, ok := at[c]
		if !ok {
			missing = append(missing, c)
		}
		pick[i] = j
	}
	if len(missing) > 0 {
		noun := "column"
		if len(missing) > 1 {
			noun = "columns"
		}
		return nil, nil, fmt.Errorf("%s line 1: the header lacks %s %s of pipeline %s (its model takes %s); add them, or send rows without a header in that order",
			name, noun, strings.Join(missing, ","), pipeline, strings.Join(cols, ","))
	}
	cr := csv.NewReader(all)
	cr.FieldsPerRecord = len(header)
	if _, err := cr.Read(); err != nil {
		return nil, nil, fmt.Errorf("%s line 1: %w", name, err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := copyPicked(cr, csv.NewWriter(pw), pick)
		done <- err
		_ = pw.CloseWithError(err) // nil closes cleanly: the request ends
	}()
	wait := func() error {
		_ = pr.Close() // a request that failed early stops the copy
		if err := <-done; err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return fmt.Errorf("%s: %w", name, err) // csv errors name the line
		}
		return nil
	}
	return pr, wait, nil
}

func copyPicked(cr *csv.Reader, cw *csv.Writer, pick []int) error {
	out := make([]string, len(pick))
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			cw.Flush()
			return cw.Error()
		}
		if err != nil {
			return err
		}
		for i, j := range pick {
			out[i] = rec[j]
		}
		if err := cw.Write(out); err != nil {
			return err
		}
	}
}

// someRows refuses input with no rows before anything is sent: an empty
// request would come back as an empty answer and exit 0, which reads as
// "the model answered nothing". Blank lines before the first row are
// dropped; the rest streams as it comes.
func someRows(r io.Reader, name string) (io.Reader, error) {
	br := bufio.NewReader(r)
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			return nil, fmt.Errorf("no rows on %s: give CSV rows, one per line, a header first if you like (kiln predict P < rows.csv)", name)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if b != '\n' && b != '\r' {
			if err := br.UnreadByte(); err != nil {
				return nil, err
			}
			return br, nil
		}
	}
}

// specProtocol reads serve.protocol from a spec as the API sends it (JSON,
// defaults applied); the CLI does not link package config.
func specProtocol(spec any) string {
	m, _ := spec.(map[string]any)
	serve, _ := m["serve"].(map[string]any)
	if p, _ := serve["protocol"].(string); p != "" {
		return p
	}
	return contract.ProtocolSageMaker
}

// specFormat reads data.format from a spec as the API sends it; csv when
// it says none.
func specFormat(spec any) string {
	m, _ := spec.(map[string]any)
	data, _ := m["data"].(map[string]any)
	if f, _ := data["format"].(string); f != "" {
		return f
	}
	return contract.FormatCSV
}
