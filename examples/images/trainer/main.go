// Command image-trainer is kiln's example image training image: `train`
// reads the "train" channel in ImageFolder layout
// (/opt/ml/input/data/train/<label>/<file>, PNG or JPEG), fits the
// nearest-centroid model of examples/images/model, and writes
// /opt/ml/model/model.json and /opt/ml/output/metrics.json (train accuracy,
// and validation accuracy when kiln mounts a "validation" channel). A
// failure is written to /opt/ml/output/failure and the exit code is 1, as
// SageMaker's bring-your-own-container contract asks.
//
// Hyperparameters (hyperparameters.json, all strings): size (8): images are
// resized to size x size grayscale before training.
//
// The model trains on the CPU; the trainer still reports how many GPUs the
// container was given (metrics gpus_visible, and a log line), so a GPU
// pipeline can check that kiln's CDI injection reached the container.
//
// Files whose extension is not .png, .jpg or .jpeg are skipped (kiln never
// gives a trainer labels.csv, but a hand-made folder may hold notes); an
// image that does not decode fails the run, naming the file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/examples/images/model"
	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
)

func main() {
	root := flag.String("ml-root", "/opt/ml", "root of the SageMaker layout (for local runs)")
	dev := flag.String("dev", "/dev", "device folder to count GPUs in (for tests)")
	flag.Parse()
	if flag.Arg(0) != "train" {
		fmt.Fprintf(os.Stderr, "usage: image-trainer train (got %q)\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	// PID 1 in a container: without a handler SIGTERM would be ignored or
	// end us with exit 2; say why we stop instead.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, *root, *dev))
}

// run trains and returns the exit code, writing output/failure on error.
func run(ctx context.Context, root, dev string) int {
	n, how := gpusVisible(dev, os.Getenv("NVIDIA_VISIBLE_DEVICES"))
	fmt.Printf("GPUs visible: %d (%s)\n", n, how)
	met, err := train(ctx, root, n)
	if err != nil {
		sagemaker.Layout{Root: root}.Fail(err)
		return 1
	}
	fmt.Printf("trained on %d images (%d classes, %dx%d); train accuracy %.4f in %.2fs\n",
		met.TrainImages, met.Classes, met.Size, met.Size, met.TrainAccuracy, met.Seconds)
	return 0
}

// Metrics is metrics.json. ValidationAccuracy is absent without a
// validation channel.
type Metrics struct {
	TrainAccuracy      float64  `json:"train_accuracy"`
	ValidationAccuracy *float64 `json:"validation_accuracy,omitempty"`
	TrainImages        int      `json:"train_images"`
	ValidationImages   int      `json:"validation_images"`
	Classes            int      `json:"classes"`
	Size               int      `json:"size"`
	Seconds            float64  `json:"seconds"`
	GPUsVisible        int      `json:"gpus_visible"`
}

func train(ctx context.Context, root string, gpus int) (Metrics, error) {
	start := time.Now()
	ml := sagemaker.Layout{Root: root}
	hp, err := ml.Hyperparameters()
	if err != nil {
		return Metrics{}, err
	}
	size := 8
	if v, ok := hp["size"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > model.MaxSize {
			return Metrics{}, fmt.Errorf("hyperparameters.json: size=%q: want an integer from 1 to %d", v, model.MaxSize)
		}
		size = n
	}
	tr, err := readChannel(ctx, ml.Channel("train"), size)
	if err != nil {
		return Metrics{}, err
	}
	if len(tr) == 0 {
		return Metrics{}, fmt.Errorf("no images in the train channel %s: want <label>/<file>.png|.jpg", ml.Channel("train"))
	}
	var va []model.Sample
	if _, err := os.Stat(ml.Channel("validation")); err == nil {
		if va, err = readChannel(ctx, ml.Channel("validation"), size); err != nil {
			return Metrics{}, err
		}
	}
	m, err := model.Train(tr, size)
	if err != nil {
		return Metrics{}, err
	}
	met := Metrics{TrainAccuracy: m.Accuracy(tr), TrainImages: len(tr), ValidationImages: len(va),
		Classes: len(m.Classes), Size: size, GPUsVisible: gpus}
	if len(va) > 0 {
		a := m.Accuracy(va)
		met.ValidationAccuracy = &a
	}
	if err := sagemaker.WriteJSON(ml.ModelFile(), m); err != nil {
		return Metrics{}, err
	}
	met.Seconds = time.Since(start).Seconds()
	if err := sagemaker.WriteJSON(ml.MetricsFile(), met); err != nil {
		return Metrics{}, err
	}
	return met, nil
}

// gpusVisible counts the GPUs given to the container and says how it
// counted: the /dev/nvidia<N> device nodes, which CDI specs (nvidia-ctk's
// and kiln's test spec) and the NVIDIA container runtime create one a GPU;
// without any, the entries of NVIDIA_VISIBLE_DEVICES (env), unless it is
// unset, "void" or "none". Nodes come first because nvidia-ctk's CDI specs
// set NVIDIA_VISIBLE_DEVICES=void, which would count a real GPU as none.
func gpusVisible(dev, env string) (int, string) {
	var nodes []string
	if es, err := os.ReadDir(dev); err == nil {
		for _, e := range es {
			if n, ok := strings.CutPrefix(e.Name(), "nvidia"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
				nodes = append(nodes, filepath.Join(dev, e.Name()))
			}
		}
	}
	desc := "NVIDIA_VISIBLE_DEVICES=" + env
	if env == "" {
		desc = "NVIDIA_VISIBLE_DEVICES unset"
	}
	if len(nodes) > 0 {
		return len(nodes), strings.Join(nodes, " ") + "; " + desc
	}
	switch strings.TrimSpace(env) {
	case "", "void", "none":
		return 0, "no " + filepath.Join(dev, "nvidia<N>") + "; " + desc
	}
	n := 0
	for _, f := range strings.Split(env, ",") {
		if strings.TrimSpace(f) != "" {
			n++
		}
	}
	return n, "no " + filepath.Join(dev, "nvidia<N>") + "; " + desc
}

// imageExt are the extensions read; kiln's default validate.files list.
var imageExt = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

// readChannel decodes every image under dir/<label>/ (any depth below the
// label folder), on all cores; the samples come back in path order.
func readChannel(ctx context.Context, dir string, size int) ([]model.Sample, error) {
	type job struct{ path, label string }
	var jobs []job
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !imageExt[strings.ToLower(filepath.Ext(p))] {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		label, _, nested := strings.Cut(filepath.ToSlash(rel), "/")
		if !nested {
			return fmt.Errorf("%s: an image outside a <label>/ folder", p)
		}
		jobs = append(jobs, job{p, label})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(jobs, func(a, b job) int { return strings.Compare(a.path, b.path) })
	out := make([]model.Sample, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range goruntime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				b, err := os.ReadFile(jobs[i].path)
				if err == nil {
					img, derr := model.Decode(b)
					if derr != nil {
						err = fmt.Errorf("%s: %v", jobs[i].path, derr)
					} else {
						out[i] = model.Sample{Label: jobs[i].label, X: model.Features(img, size)}
					}
				}
				errs[i] = err
			}
		})
	}
	for i := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return nil, errors.New("stopped by SIGTERM while reading images")
	}
	for _, err := range errs {
		if err != nil {
			return nil, err // the first in path order: the same report every run
		}
	}
	return out, nil
}
