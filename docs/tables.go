package docs

import (
	"os"
	"regexp"
	"strings"
)

// Row is one row of a reference table whose first cell is one backticked
// key or name: | `data.settle` | duration | `2s` | ... |. The tests of
// the pages read them; so does the daemon's test of its metrics registry.
type Row struct {
	Line  int
	Key   string
	Cells []string // trimmed; a \| inside a cell is read as |
}

var keyCell = regexp.MustCompile("^`([^`]+)`$")

// TableRows reads the keyed rows of the tables in a Markdown page.
func TableRows(page string) ([]Row, error) {
	b, err := os.ReadFile(page)
	if err != nil {
		return nil, err
	}
	var rows []Row
	for i, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "| `") {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(strings.Trim(l, "| "), `\|`, "\x00"), " | ")
		for j := range cells {
			cells[j] = strings.TrimSpace(strings.ReplaceAll(cells[j], "\x00", "|"))
		}
		if m := keyCell.FindStringSubmatch(cells[0]); m != nil {
			rows = append(rows, Row{Line: i + 1, Key: m[1], Cells: cells})
		}
	}
	return rows, nil
}

// Documents says whether a metrics.md row names the metric: the same name,
// or a family row such as `go_*`.
func Documents(row, metric string) bool {
	if prefix, ok := strings.CutSuffix(row, "*"); ok {
		return strings.HasPrefix(metric, prefix)
	}
	return row == metric
}
