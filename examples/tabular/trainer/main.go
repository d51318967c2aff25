// Command tabular-trainer is kiln's example training image: `train` reads
// every CSV of the "train" channel (/opt/ml/input/data/train/), holds a
// validation split back, fits a multinomial logistic regression, and writes
// /opt/ml/model/model.json and /opt/ml/output/metrics.json. A failure is
// written to /opt/ml/output/failure and the exit code is 1, as SageMaker's
// bring-your-own-container contract asks.
//
// Hyperparameters (hyperparameters.json, all strings): label (default: the
// last column), epochs (300), learning_rate (0.5), l2 (0.001),
// validation_fraction (0.2), seed (1).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/examples/tabular/model"
)

func main() {
	root := flag.String("ml-root", "/opt/ml", "root of the SageMaker layout (for local runs)")
	flag.Parse()
	if flag.Arg(0) != "train" {
		fmt.Fprintf(os.Stderr, "usage: tabular-trainer train (got %q)\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	// PID 1 in a container: without a handler SIGTERM would be ignored or
	// end us with exit 2; say why we stop instead.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := train(ctx, *root); err != nil {
		fmt.Fprintln(os.Stderr, "train: "+err.Error())
		_ = os.WriteFile(filepath.Join(*root, "output", "failure"), []byte(err.Error()+"\n"), 0o644)
		os.Exit(1)
	}
}

// Metrics is metrics.json.
type Metrics struct {
	ValidationAccuracy float64 `json:"validation_accuracy"`
	TrainAccuracy      float64 `json:"train_accuracy"`
	TrainRows          int     `json:"train_rows"`
	ValidationRows     int     `json:"validation_rows"`
	Features           int     `json:"features"`
	Classes            int     `json:"classes"`
	Epochs             int     `json:"epochs"`
	Seconds            float64 `json:"seconds"`
}

func train(ctx context.Context, root string) error {
	start := time.Now()
	hp := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(root, "input", "config", "hyperparameters.json")); err == nil {
		if err := json.Unmarshal(b, &hp); err != nil {
			return fmt.Errorf("hyperparameters.json: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	channel := filepath.Join(root, "input", "data", "train")
	files, err := filepath.Glob(filepath.Join(channel, "*.csv"))
	if err != nil {
		return err
	}
	sub, _ := filepath.Glob(filepath.Join(channel, "*", "*.csv"))
	files = append(files, sub...)
	slices.Sort(files)
	if len(files) == 0 {
		return fmt.Errorf("no CSV files in the train channel %s", channel)
	}
	label := hp["label"]
	if label == "" {
		if label, err = lastColumn(files[0]); err != nil {
			return err
		}
	}
	var table *model.Table
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return err
		}
		if table == nil {
			table, err = model.ReadTable(r, label)
		} else {
			err = table.Append(r)
		}
		_ = r.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
	}
	epochs, err1 := intParam(hp, "epochs", 300)
	lr, err2 := floatParam(hp, "learning_rate", 0.5)
	l2, err3 := floatParam(hp, "l2", 1e-3)
	vf, err4 := floatParam(hp, "validation_fraction", 0.2)
	seed, err5 := intParam(hp, "seed", 1)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return err
	}
	if vf < 0 || vf >= 1 {
		return fmt.Errorf("hyperparameter validation_fraction=%v: want 0 <= f < 1", vf)
	}
	tr, va := table.Split(vf, uint64(seed)) //nolint:gosec // the seed's bits, as they are: a negative seed is a seed like any other
	if err := ctx.Err(); err != nil {
		return errors.New("stopped by SIGTERM before training")
	}
	m, err := model.Train(tr, model.Options{Epochs: epochs, LearningRate: lr, L2: l2})
	if err != nil {
		return err
	}
	met := Metrics{
		ValidationAccuracy: m.Accuracy(va), TrainAccuracy: m.Accuracy(tr),
		TrainRows: len(tr.X), ValidationRows: len(va.X), Features: len(m.Features),
		Classes: len(m.Classes), Epochs: epochs, Seconds: time.Since(start).Seconds(),
	}
	if err := writeJSON(filepath.Join(root, "model", "model.json"), m); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(root, "output", "metrics.json"), met); err != nil {
		return err
	}
	fmt.Printf("trained on %d rows (%d features, %d classes); validation accuracy %.4f on %d rows\n",
		met.TrainRows, met.Features, met.Classes, met.ValidationAccuracy, met.ValidationRows)
	return nil
}

func lastColumn(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	head, _, _ := strings.Cut(string(b), "\n")
	cols := strings.Split(strings.TrimSpace(head), ",")
	return cols[len(cols)-1], nil
}

func intParam(hp map[string]string, key string, def int) (int, error) {
	v, ok := hp[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("hyperparameter %s=%q: want an integer", key, v)
	}
	return n, nil
}

func floatParam(hp map[string]string, key string, def float64) (float64, error) {
	v, ok := hp[key]
	if !ok {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("hyperparameter %s=%q: want a number", key, v)
	}
	return f, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
