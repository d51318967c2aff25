package monitor

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"

	"github.com/kiln-edge/kiln/daemon/contract"
)

// The monitor keys every labelled input by its features so it can leave
// out what a model trained on and replay it through another model. A row's
// features are its values in training order; an image's one "feature" is
// its content digest, the same sha256 its blob has in the store, so an
// image the model trained on is recognised whatever its file name was.

// imageColumn is the one column of an images pipeline's keys.
const imageColumn = "image"

// imageKey is an image's features: its content digest as the blob store
// writes it.
func imageKey(data []byte) []string {
	sum := sha256.Sum256(data)
	return []string{"sha256:" + hex.EncodeToString(sum[:])}
}

// inputsOf turns the chosen rows into what goes to a model server in the
// pipeline's format: rows (csv; jsonl with the training columns as its
// keys) or the images themselves.
func inputsOf(spec pipelineSpec, cols []string, rows []scored, idx []int) contract.Inputs {
	in := contract.Inputs{Format: spec.format}
	if spec.format == contract.FormatImages {
		for _, i := range idx {
			in.Images = append(in.Images, rows[i].image)
		}
		return in
	}
	in.Columns = cols
	for _, i := range idx {
		in.Rows = append(in.Rows, rows[i].features)
	}
	return in
}

// replayable says whether row r can be sent to a model again.
func replayable(spec pipelineSpec, r scored) bool {
	if spec.format == contract.FormatImages {
		return r.image != nil
	}
	return r.features != nil
}

// decodeLogged reads a logged request's inputs: per row its features in
// model's training order (JSON Lines keys are put in that order; a key the
// request lacks is empty) and, for images, the images. ok is false when
// the input cannot be read (the log kept none, or it is not the
// pipeline's format).
func (m *Monitor) decodeLogged(spec pipelineSpec, model string, r Logged) (rows [][]string, images [][]byte, ok bool) {
	if r.Input == nil {
		return nil, nil, false
	}
	in, err := contract.DecodeInputs(r.Protocol, r.ContentType, r.Input)
	if err != nil {
		return nil, nil, false
	}
	if (in.Format == contract.FormatImages) != (spec.format == contract.FormatImages) {
		return nil, nil, false
	}
	if in.Format == contract.FormatImages {
		for _, img := range in.Images {
			rows = append(rows, imageKey(img))
		}
		return rows, in.Images, true
	}
	if in.Columns == nil {
		return in.Rows, nil, true // csv, or v2: already in training order
	}
	ti, err := m.train.get(model, spec)
	if err != nil {
		return nil, nil, false
	}
	idx := make([]int, len(ti.columns))
	for i, name := range ti.columns {
		idx[i] = slices.Index(in.Columns, name)
	}
	for _, row := range in.Rows {
		out := make([]string, len(idx))
		for i, j := range idx {
			if j >= 0 && j < len(row) {
				out[i] = row[j]
			}
		}
		rows = append(rows, out)
	}
	return rows, nil, true
}
