package model

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// jsonLines answers a SageMaker application/jsonlines request: one JSON
// object a line whose keys are the model's feature names (in any order;
// other keys, such as the label, are ignored), values JSON numbers. Blank
// lines are skipped. The answer is one predicted label a line, as for CSV.
func jsonLines(m *Model, w http.ResponseWriter, r *http.Request) {
	var out strings.Builder
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, maxBody))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	x := make([]float64, len(m.Features))
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(text, &obj); err != nil || obj == nil {
			http.Error(w, fmt.Sprintf("line %d: not a JSON object", line), http.StatusBadRequest)
			return
		}
		for i, f := range m.Features {
			raw, ok := obj[f]
			if !ok {
				http.Error(w, fmt.Sprintf("line %d: no key %q (features %s)", line, f, strings.Join(m.Features, ",")), http.StatusBadRequest)
				return
			}
			v, err := strconv.ParseFloat(string(raw), 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("line %d, key %q: %s is not a number", line, f, raw), http.StatusBadRequest)
				return
			}
			x[i] = v
		}
		y, err := m.Predict(x)
		if err != nil {
			http.Error(w, fmt.Sprintf("line %d: %v", line, err), http.StatusBadRequest)
			return
		}
		out.WriteString(y)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/csv")
	_, _ = io.WriteString(w, out.String())
}
