// Command tabular-trainer is kiln's example training image: `train` reads
// every CSV, or every JSON Lines file (one flat object a line), of the
// "train" channel (/opt/ml/input/data/train/), holds a validation split
// back, fits a multinomial logistic regression, and writes
// /opt/ml/model/model.json and /opt/ml/output/metrics.json. A failure is
// written to /opt/ml/output/failure and the exit code is 1, as SageMaker's
// bring-your-own-container contract asks.
//
// Hyperparameters (hyperparameters.json, all strings): label (kilnd sets it
// from data.label; default: the last CSV column, or the first JSON object's
// last key), epochs (300), learning_rate (0.5), l2 (0.001),
// validation_fraction (0.2), seed (1).
package main

import (
	"bytes"
	"context"
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

	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
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
		sagemaker.Layout{Root: *root}.Fail(err)
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
	ml := sagemaker.Layout{Root: root}
	hp, err := ml.Hyperparameters()
	if err != nil {
		return err
	}
	table, err := readChannel(ml.Channel("train"), hp["label"])
	if err != nil {
		return err
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
	if err := sagemaker.WriteJSON(ml.ModelFile(), m); err != nil {
		return err
	}
	if err := sagemaker.WriteJSON(ml.MetricsFile(), met); err != nil {
		return err
	}
	fmt.Printf("trained on %d rows (%d features, %d classes); validation accuracy %.4f on %d rows\n",
		met.TrainRows, met.Features, met.Classes, met.ValidationAccuracy, met.ValidationRows)
	return nil
}

// readChannel reads every CSV (*.csv) or every JSON Lines (*.jsonl) file of
// the channel and its subfolders into one table, in file name order. One
// format a channel: kilnd gives a pipeline's parts in its one data.format,
// and a mix would leave the column order to chance. label "" means the last
// column of the first file.
func readChannel(channel, label string) (*model.Table, error) {
	csvs, jsonls, err := channelFiles(channel)
	if err != nil {
		return nil, err
	}
	switch {
	case len(csvs) > 0 && len(jsonls) > 0:
		return nil, fmt.Errorf("the train channel %s holds both CSV (%s) and JSON Lines (%s) files; want one format",
			channel, filepath.Base(csvs[0]), filepath.Base(jsonls[0]))
	case len(csvs) == 0 && len(jsonls) == 0:
		return nil, fmt.Errorf("no CSV (*.csv) or JSON Lines (*.jsonl) files in the train channel %s", channel)
	}
	files, jsonl := csvs, false
	if len(jsonls) > 0 {
		files, jsonl = jsonls, true
	}
	if label == "" {
		if label, err = lastColumn(files[0], jsonl); err != nil {
			return nil, err
		}
	}
	var table *model.Table
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		switch {
		case table == nil && jsonl:
			table, err = model.ReadJSONLTable(r, label)
		case table == nil:
			table, err = model.ReadTable(r, label)
		case jsonl:
			err = table.AppendJSONL(r)
		default:
			err = table.Append(r)
		}
		_ = r.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
	}
	return table, nil
}

// channelFiles lists the channel's CSV and JSON Lines files, at its top and
// one folder down, each list sorted.
func channelFiles(channel string) (csvs, jsonls []string, err error) {
	for _, pat := range []string{"*", filepath.Join("*", "*")} {
		for _, ext := range []string{".csv", ".jsonl"} {
			m, err := filepath.Glob(filepath.Join(channel, pat+ext))
			if err != nil {
				return nil, nil, err
			}
			if ext == ".csv" {
				csvs = append(csvs, m...)
			} else {
				jsonls = append(jsonls, m...)
			}
		}
	}
	slices.Sort(csvs)
	slices.Sort(jsonls)
	return csvs, jsonls, nil
}

// lastColumn is the last column of file's first record: the CSV header's
// last name, or the last key of the first JSON object.
func lastColumn(file string, jsonl bool) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	if !jsonl {
		head, _, _ := strings.Cut(string(b), "\n")
		cols := strings.Split(strings.TrimSpace(head), ",")
		return cols[len(cols)-1], nil
	}
	keys, err := model.JSONLColumns(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(file), err)
	}
	return keys[len(keys)-1], nil
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
