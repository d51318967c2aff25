package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/contract"
)

type predictCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
	Protocol string `help:"How to read the endpoint's answer for -o json: sagemaker or v2 (default: the pipeline's serve.protocol)." placeholder:"PROTOCOL"`
}

func (predictCmd) Help() string {
	return `Rows are CSV on stdin, one per line. The first line may be a header: kiln
knows the columns the live model was trained on, so a header is matched by
name (columns in any order; the label column and columns the model does not
use are left out) and the rows go to the endpoint in training order. Without
a header the rows must be the feature columns in training order.

Examples:
  kiln predict pumps < rows.csv
  head -5 pumps.csv | kiln predict pumps        # header and label column are fine
  kiln predict pumps -o json < rows.csv         # ["failing","normal",...]`
}

// Run sends stdin through the pipeline's endpoint. The answer is copied as
// it comes; with -o json it is read with the serving contract and printed
// as a JSON array, one prediction per row.
func (c predictCmd) Run(e *cmdEnv) error {
	rows, err := someRows(os.Stdin)
	if err != nil {
		return err
	}
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
	cols, label, err := featureSchema(e.ctx, cl, c.Pipeline)
	if err != nil {
		return err
	}
	rows, wait, err := matchHeader(rows, c.Pipeline, cols, label)
	if err != nil {
		return err
	}
	var answer bytes.Buffer
	out := io.Writer(e.out)
	if e.json() {
		out = &answer
	}
	err = cl.Predict(e.ctx, c.Pipeline, rows, out)
	if rerr := wait(); rerr != nil {
		return rerr // the input's mistake explains a cut request better
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
func matchHeader(r io.Reader, pipeline string, cols []string, label string) (io.Reader, func() error, error) {
	none := func() error { return nil }
	if len(cols) == 0 {
		return r, none, nil
	}
	br := bufio.NewReader(r)
	first, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read stdin: %w", err)
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
			return nil, nil, fmt.Errorf("stdin line 1: column %q appears twice in the header", h)
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
		return nil, nil, fmt.Errorf("stdin line 1: the header lacks %s %s of pipeline %s (its model takes %s); add them, or send rows without a header in that order",
			noun, strings.Join(missing, ","), pipeline, strings.Join(cols, ","))
	}
	cr := csv.NewReader(all)
	cr.FieldsPerRecord = len(header)
	if _, err := cr.Read(); err != nil {
		return nil, nil, fmt.Errorf("stdin line 1: %w", err)
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
			return fmt.Errorf("stdin: %w", err) // csv errors name the line
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
func someRows(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			return nil, errors.New("no rows on stdin: give CSV rows, one per line, a header first if you like (kiln predict P < rows.csv)")
		}
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
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
