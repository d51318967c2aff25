package model

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// jsonLines answers a SageMaker application/jsonlines request: one JSON
// object a line whose keys are the model's feature names (in any order;
// other keys, such as the label, are ignored), values JSON numbers. Blank
// lines are skipped. The answer is one predicted label a line, as for CSV.
func jsonLines(m *Model, w http.ResponseWriter, r *http.Request) {
	x := make([]float64, len(m.Features))
	predictLines(m, w, r, "line", func(n int, line string) ([]float64, error) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("line %d: not a JSON object", n)
		}
		for i, f := range m.Features {
			raw, ok := obj[f]
			if !ok {
				return nil, fmt.Errorf("line %d: no key %q (features %s)", n, f, strings.Join(m.Features, ","))
			}
			v, err := strconv.ParseFloat(string(raw), 64)
			if err != nil {
				return nil, fmt.Errorf("line %d, key %q: %s is not a number", n, f, raw)
			}
			x[i] = v
		}
		return x, nil
	})
}
