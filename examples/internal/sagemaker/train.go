package sagemaker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Layout is the SageMaker training folder tree under Root: /opt/ml in a
// container, a temporary folder in tests.
type Layout struct{ Root string }

// Channel is the folder kiln mounts a data channel at: input/data/<name>.
func (l Layout) Channel(name string) string { return filepath.Join(l.Root, "input", "data", name) }

// ModelFile is where a trainer writes its model: model/model.json.
func (l Layout) ModelFile() string { return filepath.Join(l.Root, "model", "model.json") }

// MetricsFile is where a trainer writes its metrics: output/metrics.json.
func (l Layout) MetricsFile() string { return filepath.Join(l.Root, "output", "metrics.json") }

// Hyperparameters reads input/config/hyperparameters.json (a JSON object of
// strings, as SageMaker writes it); without the file there are none.
func (l Layout) Hyperparameters() (map[string]string, error) {
	hp := map[string]string{}
	b, err := os.ReadFile(filepath.Join(l.Root, "input", "config", "hyperparameters.json"))
	if errors.Is(err, os.ErrNotExist) {
		return hp, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &hp); err != nil {
		return nil, fmt.Errorf("hyperparameters.json: %w", err)
	}
	return hp, nil
}

// Fail reports a failed training run as the contract asks: "train: <err>"
// on stderr and the error, one line, in output/failure, which kiln shows as
// the run's reason.
func (l Layout) Fail(err error) {
	fmt.Fprintln(os.Stderr, "train: "+err.Error())
	out := filepath.Join(l.Root, "output")
	_ = os.MkdirAll(out, 0o755)
	_ = os.WriteFile(filepath.Join(out, "failure"), []byte(err.Error()+"\n"), 0o644)
}

// WriteJSON writes v as indented JSON and a newline to path, making its
// folder first.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
