package ingest

import (
	"path"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// lateLabelsFormat says whether what was dropped in an images pipeline's feedback folder is
// late labels (request_id,label rows the monitor joins to logged predictions) rather than
// labelled images, and in which format: a loose file, or a batch of files, all named .csv
// (csv) or all .jsonl or .ndjson (jsonl). "" otherwise: images, or a mix, go the images way.
func lateLabelsFormat(spec *config.Pipeline, kind storage.DatasetKind, names []string) string {
	if spec.Data.Format != config.FormatImages || kind != storage.KindFeedback || len(names) == 0 {
		return ""
	}
	format := ""
	for _, n := range names {
		f := config.FormatCSV
		switch strings.ToLower(path.Ext(n)) {
		case ".csv":
		case ".jsonl", ".ndjson":
			f = config.FormatJSONL
		default:
			return ""
		}
		if format != "" && f != format {
			return ""
		}
		format = f
	}
	return format
}

// lateLabelsOnly is what an images pipeline's feedback may be, for reasons.
const lateLabelsOnly = "request_id,label (late labels; JSON Lines: id and label); labelled images come in a batch folder closed by " + SuccessMarker
