package pipeline

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/kiln-edge/kiln/daemon/contract"
)

// Backend is one model's serving container, as the evaluator and the
// endpoint reach it.
type Backend interface {
	Model() string
	DialContext(ctx context.Context) (net.Conn, error)
}

// predict sends rows through b in the serving contract's format (package
// contract) and returns one prediction per row, in order; errors name the
// model as well as the rows.
func predict(ctx context.Context, b Backend, protocol, pipeline string, rows [][]string) ([]string, error) {
	preds, err := contract.Predict(ctx, b.DialContext, protocol, pipeline, rows)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", b.Model(), err)
	}
	return preds, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
