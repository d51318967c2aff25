package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/examples/images/model"
)

var classes = []string{"bolt", "nut", "washer", "gear", "spring"}

// layout writes seed's images as the train channel of a fresh /opt/ml.
func layout(t *testing.T, perClass int, seed int64, opt imagedata.Options) string {
	t.Helper()
	root := t.TempDir()
	if _, err := imagedata.Write(filepath.Join(root, "input", "data", "train"), classes, perClass, seed, opt); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestTrainPredictsUnseenImages trains on one seed's images and scores
// another seed's, some as JPEG and under other lighting, through the model
// the trainer wrote.
func TestTrainPredictsUnseenImages(t *testing.T) {
	root := layout(t, 60, 1, imagedata.Options{})
	if err := os.MkdirAll(filepath.Join(root, "input", "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "input", "config", "hyperparameters.json"), []byte(`{"size":"8"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := imagedata.Write(filepath.Join(root, "input", "data", "validation"), classes, 10, 3, imagedata.Options{}); err != nil {
		t.Fatal(err)
	}
	if code := run(context.Background(), root, filepath.Join(root, "dev")); code != 0 {
		b, _ := os.ReadFile(filepath.Join(root, "output", "failure"))
		t.Fatalf("exit %d: %s", code, b)
	}
	var met Metrics
	b, err := os.ReadFile(filepath.Join(root, "output", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &met); err != nil {
		t.Fatal(err)
	}
	if met.TrainImages != 300 || met.ValidationImages != 50 || met.Classes != 5 || met.Size != 8 ||
		met.ValidationAccuracy == nil || met.TrainAccuracy < 0.95 || *met.ValidationAccuracy < 0.95 ||
		!strings.Contains(string(b), `"gpus_visible": 0`) {
		t.Errorf("metrics.json = %s", b)
	}
	m, err := model.Load(filepath.Join(root, "model", "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []imagedata.Options{{JPEG: true}, {Size: 48, Brightness: 40}, {Size: 20, Gray: true}} {
		hold, err := imagedata.Generate(classes, 40, 2, opt)
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, f := range hold {
			y, err := m.Predict(f.Data)
			if err != nil {
				t.Fatalf("%s: %v", f.Path, err)
			}
			if y == f.Label {
				ok++
			}
		}
		if acc := float64(ok) / float64(len(hold)); acc < 0.95 {
			t.Errorf("%+v: accuracy on %d unseen images %.3f; want >= 0.95", opt, len(hold), acc)
		} else {
			t.Logf("%+v: accuracy on %d unseen images %.4f", opt, len(hold), acc)
		}
	}
}

// TestTrainDeterministic: the same images give the same model.json bytes.
func TestTrainDeterministic(t *testing.T) {
	var models [2]string
	for i := range models {
		root := layout(t, 20, 5, imagedata.Options{JPEG: true})
		if code := run(context.Background(), root, filepath.Join(root, "dev")); code != 0 {
			t.Fatalf("exit %d", code)
		}
		b, err := os.ReadFile(filepath.Join(root, "model", "model.json"))
		if err != nil {
			t.Fatal(err)
		}
		models[i] = string(b)
	}
	if models[0] != models[1] {
		t.Error("two runs on the same images wrote different model.json")
	}
}

// TestTrainFailures: each bad input writes a one-line failure naming it.
func TestTrainFailures(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, root string)
		want  string
	}{
		{"corrupt image", func(t *testing.T, root string) {
			if err := imagedata.WriteCorrupt(filepath.Join(root, "input", "data", "train", "nut", "bad.png")); err != nil {
				t.Fatal(err)
			}
		}, "train/nut/bad.png: not a decodable png: "},
		{"image outside a label folder", func(t *testing.T, root string) {
			f, _ := imagedata.Generate(classes[:1], 1, 1, imagedata.Options{})
			if err := os.WriteFile(filepath.Join(root, "input", "data", "train", "loose.png"), f[0].Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "train/loose.png: an image outside a <label>/ folder"},
		{"bad size", func(t *testing.T, root string) {
			_ = os.MkdirAll(filepath.Join(root, "input", "config"), 0o755)
			if err := os.WriteFile(filepath.Join(root, "input", "config", "hyperparameters.json"), []byte(`{"size":"0"}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, `hyperparameters.json: size="0": want an integer from 1 to 64`},
		{"no images", func(t *testing.T, root string) {
			if err := os.RemoveAll(filepath.Join(root, "input", "data", "train")); err != nil {
				t.Fatal(err)
			}
			_ = os.MkdirAll(filepath.Join(root, "input", "data", "train", "nut"), 0o755)
			_ = os.WriteFile(filepath.Join(root, "input", "data", "train", "nut", "notes.txt"), []byte("hi"), 0o644)
		}, "no images in the train channel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := layout(t, 3, 1, imagedata.Options{})
			c.setup(t, root)
			if code := run(context.Background(), root, filepath.Join(root, "dev")); code != 1 {
				t.Fatalf("exit %d; want 1", code)
			}
			b, err := os.ReadFile(filepath.Join(root, "output", "failure"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), c.want) || strings.Count(string(b), "\n") != 1 {
				t.Errorf("failure = %q; want one line holding %q", b, c.want)
			}
			if _, err := os.Stat(filepath.Join(root, "model", "model.json")); err == nil {
				t.Error("model.json written despite the failure")
			}
		})
	}
}

// TestTrainTenThousandImages: the example stays fast enough for kiln's
// tests and benchmarks (10,000 small images well under the trainer's
// budget). Skipped in -short.
func TestTrainTenThousandImages(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and trains on 10,000 images")
	}
	root := layout(t, 2000, 9, imagedata.Options{Size: 16})
	met, err := train(context.Background(), root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if met.TrainImages != 10000 || met.TrainAccuracy < 0.95 {
		t.Errorf("metrics %+v", met)
	}
	t.Logf("10,000 16x16 images trained in %.2fs", met.Seconds)
	if met.Seconds > 20 {
		t.Errorf("training took %.1fs; want seconds", met.Seconds)
	}
}

// TestGPUsVisible: GPUs are counted by /dev/nvidia<N> nodes (not nvidiactl,
// nvidia-uvm, nvidia-caps), else by NVIDIA_VISIBLE_DEVICES entries; "void"
// and "none" mean no GPU; the count reaches metrics.json.
func TestGPUsVisible(t *testing.T) {
	empty := t.TempDir()
	nodes := t.TempDir()
	for _, n := range []string{"nvidia0", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-caps", "nvidia", "null"} {
		if err := os.WriteFile(filepath.Join(nodes, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uuid := "GPU-0000a100-0000-4000-8000-000000000000"
	for _, c := range []struct {
		dev, env string
		want     int
	}{
		{empty, "", 0},
		{empty, "void", 0},
		{empty, "none", 0},
		{empty, uuid, 1},
		{empty, "0,1", 2},
		{empty, "all", 1}, // one entry: "all" names no count, and kiln never sets it
		{nodes, "void", 2},
		{nodes, "", 2},
		{filepath.Join(empty, "missing"), uuid, 1},
	} {
		if n, how := gpusVisible(c.dev, c.env); n != c.want || !strings.Contains(how, "NVIDIA_VISIBLE_DEVICES") {
			t.Errorf("gpusVisible(%s, %q) = %d, %q; want %d, saying what NVIDIA_VISIBLE_DEVICES was", c.dev, c.env, n, how, c.want)
		}
	}

	root := layout(t, 10, 7, imagedata.Options{})
	t.Setenv("NVIDIA_VISIBLE_DEVICES", uuid)
	if code := run(context.Background(), root, empty); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var met Metrics
	b, err := os.ReadFile(filepath.Join(root, "output", "metrics.json"))
	if err == nil {
		err = json.Unmarshal(b, &met)
	}
	if err != nil || met.GPUsVisible != 1 {
		t.Errorf("metrics.json with NVIDIA_VISIBLE_DEVICES=%s: %s, %v; want gpus_visible 1", uuid, b, err)
	}
}
