package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SplitRowID splits a per-row id "<request-id>:<i>" into the request id and
// the 0-based row. An id without a ":<digits>" suffix is row 0 of itself.
// Ids the endpoint makes never hold a colon; a client's own id may, so
// "order:7" reads as row 7 of "order": a caller that finds no such request
// may look the whole id up as row 0.
func SplitRowID(id string) (requestID string, row int, err error) {
	if id == "" {
		return "", 0, errors.New("empty prediction id")
	}
	i := strings.LastIndexByte(id, ':')
	if i < 0 || i == len(id)-1 {
		return id, 0, nil
	}
	suffix := id[i+1:]
	for j := 0; j < len(suffix); j++ {
		if suffix[j] < '0' || suffix[j] > '9' {
			return id, 0, nil
		}
	}
	if i == 0 {
		return "", 0, fmt.Errorf("prediction id %q has a row but no request id", id)
	}
	n, err := strconv.Atoi(suffix)
	if err != nil {
		return "", 0, fmt.Errorf("prediction id %q: row %s is out of range", id, suffix)
	}
	return id[:i], n, nil
}
