package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/config"
)

func f64(v float64) *float64 { return &v }

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePipelineFull(t *testing.T) {
	got, err := config.LoadPipelineFile("../../examples/pipelines/pumps.yaml")
	if err != nil {
		t.Fatalf("LoadPipelineFile: %v", err)
	}
	want := &config.Pipeline{
		Name: "pumps",
		Data: config.Data{
			Format: "csv",
			Label:  "condition",
			Settle: config.D(2 * time.Second),
			Validate: config.Validation{
				Rows:                 config.RowBounds{Min: 10},
				MaxNullFraction:      f64(0.01),
				MaxDuplicateFraction: f64(0.2),
				Labels:               []string{"normal", "worn", "failing"},
				Ranges: map[string]config.Range{
					"temperature": {Min: f64(-40), Max: f64(150)},
					"vibration":   {Min: f64(0)},
				},
				Drift: &config.Drift{PSIMax: 0.25},
			},
			MaxFileSize: config.GiB,
		},
		Window: config.Window{Versions: "all"},
		Train: config.Train{
			Image:           "kiln.local/tabular-trainer:1",
			Hyperparameters: map[string]string{"label": "condition", "max_depth": "6", "learning_rate": "1e-3"},
			Channels:        []string{"train"},
			Resources:       config.Resources{Memory: 2 * config.GiB, CPUs: 1.5, PIDs: 256},
			Timeout:         config.D(30 * time.Minute),
			Retries:         1,
		},
		Serve: config.Serve{
			Image:     "kiln.local/tabular-server:1",
			Protocol:  "sagemaker",
			Listen:    "127.0.0.1:8080",
			Resources: config.Resources{Memory: 512 * config.MiB, CPUs: 1, PIDs: 1024},
			Standby:   "keep_warm",
		},
		Evaluate: config.Evaluate{
			Holdout: config.Holdout{Fraction: 0.2, Seed: 1},
			Metric:  "accuracy",
			Gate:    config.Gate{Min: f64(0.7)},
		},
		Triggers: config.Triggers{
			NewData:     config.NewData{Debounce: config.D(10 * time.Second), MinRows: 100},
			Schedule:    "0 3 * * *",
			Degradation: "retrain",
		},
		Monitor: config.Monitor{TargetFalseAlarm: 0.01, Cooldown: config.D(10 * time.Minute), Probation: config.D(30 * time.Minute),
			MinLabelRate: 50, MaxRetrainsPerDay: 3, Log: defaultLog},
		Retention: config.Retention{Models: 10},
		File:      "../../examples/pipelines/pumps.yaml",
		Digest:    got.Digest,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadPipelineFile(pumps.yaml) mismatch (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(got.Digest, "sha256:") || len(got.Digest) != len("sha256:")+64 {
		t.Errorf("Digest = %q, want sha256:<64 hex>", got.Digest)
	}
}

var defaultLog = config.MonitorLog{Keep: config.Age{Duration: config.D(14 * 24 * time.Hour)}, MaxSize: 4 * config.GiB, Inputs: "all"}

// TestMonitorLog: the prediction log's keys, days included, and what the
// endpoint is told.
func TestMonitorLog(t *testing.T) {
	base := "name: pumps\ndata: {label: c}\ntrain: {image: t:1}\nserve: {image: s:1}\n"
	for _, tc := range []struct {
		spec     string
		want     config.MonitorLog
		fraction float64
	}{
		{"", defaultLog, 1},
		{"monitor: {log: {keep: 36h, max_size: 1Gi, inputs: none}}\n",
			config.MonitorLog{Keep: config.Age{Duration: config.D(36 * time.Hour)}, MaxSize: config.GiB, Inputs: "none"}, 0},
		{"monitor: {log: {keep: 30d, inputs: sample 0.1}}\n",
			config.MonitorLog{Keep: config.Age{Duration: config.D(30 * 24 * time.Hour)}, MaxSize: 4 * config.GiB, Inputs: "sample 0.1"}, 0.1},
		{"monitor: {log: {keep: 0}}\n", config.MonitorLog{MaxSize: 4 * config.GiB, Inputs: "all"}, 1},
	} {
		p, err := config.ParsePipeline("pumps.yaml", []byte(base+tc.spec))
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		if diff := cmp.Diff(tc.want, p.Monitor.Log); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.spec, diff)
		}
		if f := p.Monitor.Log.InputFraction(); f != tc.fraction {
			t.Errorf("%q: InputFraction %v, want %v", tc.spec, f, tc.fraction)
		}
	}
	if s := defaultLog.Keep.String(); s != "14d" {
		t.Errorf("keep prints as %q", s)
	}
}

func TestParsePipelineDefaults(t *testing.T) {
	got, err := config.ParsePipeline("iris.yaml", mustRead(t, "testdata/minimal.yaml"))
	if err != nil {
		t.Fatalf("ParsePipeline: %v", err)
	}
	want := &config.Pipeline{
		Name: "iris",
		Data: config.Data{
			Format:      "csv",
			Label:       "y",
			Settle:      config.D(2 * time.Second),
			Validate:    config.Validation{Rows: config.RowBounds{Min: 1}},
			MaxFileSize: config.GiB,
		},
		Window: config.Window{Versions: "all"},
		Train: config.Train{
			Image:     "kiln.local/trainer:1",
			Channels:  []string{"train"},
			Resources: config.Resources{PIDs: 1024},
			Timeout:   config.D(time.Hour),
		},
		Serve: config.Serve{
			Image:     "kiln.local/server:1",
			Protocol:  "sagemaker",
			Resources: config.Resources{PIDs: 1024},
			Standby:   "keep_warm",
		},
		Evaluate: config.Evaluate{Holdout: config.Holdout{Fraction: 0.2, Seed: 1}, Metric: "accuracy"},
		Triggers: config.Triggers{
			NewData:     config.NewData{Debounce: config.D(10 * time.Second), MinRows: 1},
			Degradation: "retrain",
		},
		Monitor: config.Monitor{TargetFalseAlarm: 0.01, Cooldown: config.D(10 * time.Minute), Probation: config.D(30 * time.Minute),
			MinLabelRate: 50, MaxRetrainsPerDay: 3, Log: defaultLog},
		Retention: config.Retention{Models: 10},
		File:      "iris.yaml",
		Digest:    got.Digest,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParsePipeline(minimal) mismatch (-want +got):\n%s", diff)
	}
}

// The minimal spec the cases below add to or break; line 1 is name:.
const base = `name: pumps
data:
  label: condition
train:
  image: kiln.local/trainer:1
serve:
  image: kiln.local/server:1
`

func TestParsePipelineOverrides(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		check func(p *config.Pipeline) any
		want  any
	}{
		{"explicit zero settle is kept", "data: {label: c, settle: 0s}\n", func(p *config.Pipeline) any { return p.Data.Settle }, config.D(0)},
		{"window last", "window: {last: 5}\n", func(p *config.Pipeline) any { return p.Window }, config.Window{Last: 5}},
		{"window days", "window: {days: 30}\n", func(p *config.Pipeline) any { return p.Window }, config.Window{Days: 30}},
		{"holdout file", "evaluate: {holdout: {file: /srv/h.csv}}\n", func(p *config.Pipeline) any { return p.Evaluate.Holdout }, config.Holdout{File: "/srv/h.csv"}},
		{"gpus short", "train: {image: t:1, gpus: 2}\n", func(p *config.Pipeline) any { return p.Train.GPUs }, config.GPUs{Count: 2}},
		{"gpus long", "train: {image: t:1, gpus: {count: 1, min_free: 8Gi}}\n", func(p *config.Pipeline) any { return p.Train.GPUs }, config.GPUs{Count: 1, MinFree: 8 * config.GiB}},
		{"hyperparameters of every type", "train: {image: t:1, hyperparameters: {a: 1, b: 0.5, c: true, d: x, e: '007'}}\n",
			func(p *config.Pipeline) any { return p.Train.Hyperparameters },
			map[string]string{"a": "1", "b": "0.5", "c": "true", "d": "x", "e": "007"}},
		{"regression gate", "evaluate: {metric: rmse, gate: {max: 2.5, min_improvement: 0.1}}\n",
			func(p *config.Pipeline) any { return p.Evaluate.Gate }, config.Gate{Max: f64(2.5), MinImprovement: 0.1}},
		{"files format", "data: {format: files, validate: {files: {extensions: [.jpg], max_size: 10M, max_count: 100}}}\n",
			func(p *config.Pipeline) any { return p.Data.Validate.Files },
			&config.FileRules{Extensions: []string{".jpg"}, MaxSize: 10_000_000, MaxCount: 100}},
		{"images", "data: {format: images, validate: {labels: [cat, dog], min_per_class: 5, drift: {psi_max: 0.2}, files: {extensions: [.PNG], max_count: 10000}}}\n",
			func(p *config.Pipeline) any { return p.Data },
			config.Data{Format: "images", Settle: config.D(2 * time.Second), MaxFileSize: config.GiB, Validate: config.Validation{
				Labels: []string{"cat", "dog"}, MinPerClass: 5, Drift: &config.Drift{PSIMax: 0.2},
				Files: &config.FileRules{Extensions: []string{".PNG"}, MaxCount: 10000}}}},
		{"images without rules", "data: {format: images}\n",
			func(p *config.Pipeline) any { return p.Data.Validate }, config.Validation{}},
		{"anchors and aliases", "train: {image: t:1, resources: &r {memory: 1Gi}}\nserve: {image: s:1, resources: *r}\n",
			func(p *config.Pipeline) any { return p.Serve.Resources }, config.Resources{Memory: config.GiB, PIDs: 1024}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later keys of the same name would be duplicates, so replace the section.
			spec := mergeTop(base, tt.extra)
			p, err := config.ParsePipeline("pumps.yaml", []byte(spec))
			if err != nil {
				t.Fatalf("ParsePipeline:\n%s\nerror: %v", spec, err)
			}
			if diff := cmp.Diff(tt.want, tt.check(p)); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// mergeTop replaces base's top-level sections with those in extra.
func mergeTop(base, extra string) string {
	sections := func(s string) (keys []string, body map[string]string) {
		body = map[string]string{}
		var cur string
		for line := range strings.Lines(s) {
			if line != "" && line[0] != ' ' {
				cur, _, _ = strings.Cut(line, ":")
				keys = append(keys, cur)
			}
			body[cur] += line
		}
		return keys, body
	}
	bk, bb := sections(base)
	ek, eb := sections(extra)
	var out strings.Builder
	for _, k := range bk {
		if v, ok := eb[k]; ok {
			out.WriteString(v)
		} else {
			out.WriteString(bb[k])
		}
	}
	for _, k := range ek {
		if _, ok := bb[k]; !ok {
			out.WriteString(eb[k])
		}
	}
	return out.String()
}

func TestParsePipelineErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // default pumps.yaml
		spec string
		want string
	}{
		{"empty", "", ``, `pumps.yaml: empty file (want a mapping of keys such as name:, data:)`},
		{"only comments", "", "# nothing\n", `pumps.yaml: empty file (want a mapping of keys such as name:, data:)`},
		{"null document", "", "~\n", `pumps.yaml: empty file (want a mapping of keys such as name:, data:)`},
		{"two documents", "", base + "---\nname: other\n", `pumps.yaml:9: more than one YAML document (a file holds one spec; remove the --- separator)`},
		{"empty trailing document is fine but the third is not", "", base + "---\n---\nname: x\n", `pumps.yaml:10: more than one YAML document (a file holds one spec; remove the --- separator)`},
		{"top-level list", "", "- a\n- b\n", `pumps.yaml:1:1: the top level must be a mapping of keys such as name:, data:; got a list`},
		{"top-level scalar", "", "hello\n", `pumps.yaml:1:1: the top level must be a mapping of keys such as name:, data:; got "hello"`},
		{"tab indentation", "", "name: pumps\ndata:\n\tlabel: c\n", `pumps.yaml:3:1: tab in indentation (YAML indents with spaces)`},
		{"syntax", "", "name: pumps\ndata: [a\n", `pumps.yaml:2: invalid YAML: did not find expected ',' or ']'`},
		{"unknown top-level key", "", base + "trian: {}\n", `pumps.yaml:8:1: trian: unknown field (known: name, data, window, train, serve, evaluate, triggers, monitor, retention)`},
		{"unknown nested key", "", mergeTop(base, "data:\n  label: c\n  validat: {}\n"),
			`pumps.yaml:4:3: data.validat: unknown field (known: format, label, settle, validate, max_file_size)`},
		{"duplicate key", "", base + "name: pumps\n", `pumps.yaml:8:1: name: duplicate key (first at line 1)`},
		{"merge key", "", mergeTop(base, "train:\n  <<: {image: x}\n"), `pumps.yaml:5:3: train.<<: merge keys are not supported; write the keys out`},
		{"bad size", "", mergeTop(base, "train:\n  image: t:1\n  resources: {memory: 2Gx}\n"),
			`pumps.yaml:6:23: train.resources.memory: invalid size "2Gx" (want e.g. 512Mi, 2Gi)`},
		{"bad duration", "", mergeTop(base, "train:\n  image: t:1\n  timeout: 30\n"),
			`pumps.yaml:6:12: train.timeout: invalid duration "30" (want e.g. 30s, 10m, 1h)`},
		{"negative duration", "", mergeTop(base, "data: {label: c, settle: -1s}\n"),
			`pumps.yaml:2:26: data.settle: invalid duration "-1s" (want e.g. 30s, 10m, 1h)`},
		{"string for int", "", mergeTop(base, "train:\n  image: t:1\n  retries: many\n"),
			`pumps.yaml:6:12: train.retries: want an integer, got "many"`},
		{"float for int", "", mergeTop(base, "train:\n  image: t:1\n  retries: 1.5\n"),
			`pumps.yaml:6:12: train.retries: want a whole number, got 1.5`},
		{"mapping for string", "", mergeTop(base, "data: {label: {a: b}}\n"), `pumps.yaml:2:15: data.label: want a string, got a mapping`},
		{"scalar for list", "", mergeTop(base, "data: {label: c, validate: {labels: normal}}\n"),
			`pumps.yaml:2:37: data.validate.labels: want a list, got "normal"`},
		{"nan", "", mergeTop(base, "data: {label: c, validate: {max_null_fraction: .nan}}\n"),
			`pumps.yaml:2:48: data.validate.max_null_fraction: want a finite number, got .nan`},
		{"null hyperparameter", "", mergeTop(base, "train: {image: t:1, hyperparameters: {a: }}\n"),
			`pumps.yaml:4:39: train.hyperparameters.a: no value (write "" for an empty string)`},
		{"gpus word", "", mergeTop(base, "train: {image: t:1, gpus: all}\n"),
			`pumps.yaml:4:27: train.gpus: want a GPU count or {count: N, min_free: SIZE}, got "all"`},
		{"gpus unknown key", "", mergeTop(base, "train: {image: t:1, gpus: {cont: 1}}\n"),
			`pumps.yaml:4:28: train.gpus.cont: unknown field (known: count, min_free)`},
		{"missing train image", "", mergeTop(base, "train:\n  timeout: 1h\n"),
			`pumps.yaml:4:1: train.image: required (an image reference such as kiln.local/trainer:1, or sha256:<digest>)`},
		{"missing train section", "", "name: pumps\ndata: {label: c}\nserve: {image: s:1}\n",
			`pumps.yaml:1:1: train.image: required (an image reference such as kiln.local/trainer:1, or sha256:<digest>)`},
		{"bad image", "", mergeTop(base, "serve: {image: Kiln/Server:1}\n"),
			`pumps.yaml:6:16: serve.image: "Kiln/Server:1" is not an image reference: invalid reference format: repository name (Server) must be lowercase`},
		{"missing label", "", mergeTop(base, "data: {format: jsonl}\n"), `pumps.yaml:2:1: data.label: required for format jsonl (the label column)`},
		{"bad format", "", mergeTop(base, "data: {format: parquet, label: c}\n"), `pumps.yaml:2:16: data.format: "parquet" is not one of csv, jsonl, images, files`},
		{"name mismatch", "", strings.Replace(base, "name: pumps", "name: pump", 1),
			`pumps.yaml:1:7: name: "pump" differs from the file name "pumps" (a spec is named by its file; rename one of them)`},
		{"bad name from stdin", "-", strings.Replace(base, "name: pumps", "name: Pumps", 1),
			`-:1:7: name: "Pumps" is not a valid pipeline name (want 1 to 32 of a-z, 0-9 and -)`},
		{"no name from stdin", "-", strings.Replace(base, "name: pumps\n", "", 1), `-:1:1: name: required`},
		{"bad file name", "Pumps_2.yaml", strings.Replace(base, "name: pumps\n", "", 1),
			`Pumps_2.yaml: file name "Pumps_2" is not a valid pipeline name (want 1 to 32 of a-z, 0-9 and -; the file name is the pipeline name)`},
		{"two windows", "", base + "window: {versions: all, last: 3}\n", `pumps.yaml:8:1: window: set exactly one of versions: all, last: N or days: D (N, D at least 1)`},
		{"window versions word", "", base + "window: {versions: some}\n", `pumps.yaml:8:20: window.versions: "some" is not one of all`},
		{"holdout both", "", base + "evaluate: {holdout: {fraction: 0.3, file: /h.csv}}\n", `pumps.yaml:8:32: evaluate.holdout.fraction: set fraction or file, not both`},
		{"holdout relative", "", base + "evaluate: {holdout: {file: h.csv}}\n", `pumps.yaml:8:28: evaluate.holdout.file: "h.csv" is not an absolute path`},
		{"holdout fraction 1", "", base + "evaluate: {holdout: {fraction: 1}}\n",
			`pumps.yaml:8:32: evaluate.holdout.fraction: 1 is out of range (want above 0 and below 1, e.g. 0.2)`},
		{"gate min for rmse", "", base + "evaluate: {metric: rmse, gate: {min: 0.5}}\n",
			`pumps.yaml:8:38: evaluate.gate.min: applies to accuracy and macro_f1; use gate.max for rmse (lower is better)`},
		{"gate min above 1", "", base + "evaluate: {gate: {min: 70}}\n", `pumps.yaml:8:24: evaluate.gate.min: 70 is out of range (want 0 to 1)`},
		{"bad metric", "", base + "evaluate: {metric: f1}\n", `pumps.yaml:8:20: evaluate.metric: "f1" is not one of accuracy, macro_f1, mae, rmse`},
		{"cron fields", "", base + "triggers: {schedule: \"0 3 * *\"}\n",
			`pumps.yaml:8:22: triggers.schedule: "0 3 * *" has 4 fields; want 5: minute hour day-of-month month day-of-week (e.g. "0 3 * * *")`},
		{"cron range", "", base + "triggers: {schedule: \"0 24 * * *\"}\n", `pumps.yaml:8:22: triggers.schedule: "0 24 * * *": hour field: 24 is out of range 0-23`},
		{"cron never", "", base + "triggers: {schedule: \"0 0 30 feb *\"}\n", `pumps.yaml:8:22: triggers.schedule: "0 0 30 feb *" never runs: no chosen month has such a day`},
		{"degradation", "", base + "triggers: {degradation: rollback}\n", `pumps.yaml:8:25: triggers.degradation: "rollback" is not one of retrain, alert`},
		{"min rows", "", base + "triggers: {new_data: {min_rows: 0}}\n", `pumps.yaml:8:33: triggers.new_data.min_rows: must be at least 1`},
		{"protocol", "", mergeTop(base, "serve: {image: s:1, protocol: kserve}\n"), `pumps.yaml:6:31: serve.protocol: "kserve" is not one of sagemaker, v2`},
		{"listen", "", mergeTop(base, "serve: {image: s:1, listen: 8080}\n"), `pumps.yaml:6:29: serve.listen: "8080" is not host:port (want e.g. 127.0.0.1:8080)`},
		{"listen port", "", mergeTop(base, "serve: {image: s:1, listen: 'localhost:http'}\n"), `pumps.yaml:6:29: serve.listen: "localhost:http" has no valid port (want 1 to 65535)`},
		{"standby", "", mergeTop(base, "serve: {image: s:1, standby: cold}\n"), `pumps.yaml:6:30: serve.standby: "cold" is not one of keep_warm, stop`},
		{"min_free without count", "", mergeTop(base, "serve: {image: s:1, gpus: {min_free: 8Gi}}\n"), `pumps.yaml:6:38: serve.gpus.min_free: needs count of at least 1`},
		{"tiny memory", "", mergeTop(base, "serve: {image: s:1, resources: {memory: 100k}}\n"),
			`pumps.yaml:6:41: serve.resources.memory: 100k is too small (want 0 for no limit, or at least 6Mi)`},
		{"channels", "", mergeTop(base, "train: {image: t:1, channels: [train, test]}\n"), `pumps.yaml:4:39: train.channels[1]: "test" is not one of train, validation`},
		{"channels without train", "", mergeTop(base, "train: {image: t:1, channels: [validation]}\n"), `pumps.yaml:4:21: train.channels: must include train`},
		{"retries", "", mergeTop(base, "train: {image: t:1, retries: 99}\n"), `pumps.yaml:4:30: train.retries: 99 is out of range (want 0 to 10)`},
		{"duplicate label", "", mergeTop(base, "data: {label: c, validate: {labels: [a, b, a]}}\n"), `pumps.yaml:2:44: data.validate.labels[2]: "a" is listed twice`},
		{"range backwards", "", mergeTop(base, "data: {label: c, validate: {ranges: {t: {min: 5, max: 1}}}}\n"),
			`pumps.yaml:2:55: data.validate.ranges.t.max: 1 is below min 5`},
		{"files rules on csv", "", mergeTop(base, "data: {label: c, validate: {files: {max_count: 3}}}\n"),
			`pumps.yaml:2:29: data.validate.files: applies to format files and images, not csv`},
		{"labels on files", "", mergeTop(base, "data: {format: files, validate: {labels: [a]}}\n"),
			`pumps.yaml:2:34: data.validate.labels: applies to csv, jsonl and images, not format files`},
		{"min_per_class on files", "", mergeTop(base, "data: {format: files, validate: {min_per_class: 3}}\n"),
			`pumps.yaml:2:49: data.validate.min_per_class: applies to format images, not files`},
		{"min_per_class on csv", "", mergeTop(base, "data: {label: c, validate: {min_per_class: 3}}\n"),
			`pumps.yaml:2:44: data.validate.min_per_class: applies to format images, not csv`},
		{"rows on images", "", mergeTop(base, "data:\n  format: images\n  validate:\n    rows: {min: 1}\n"),
			`pumps.yaml:5:5: data.validate.rows: applies to csv, jsonl and files, not format images (count images with files.max_count and min_per_class)`},
		{"null fraction on images", "", mergeTop(base, "data: {format: images, validate: {max_null_fraction: 0.1}}\n"),
			`pumps.yaml:2:54: data.validate.max_null_fraction: applies to csv and jsonl data, not format images`},
		{"ranges on images", "", mergeTop(base, "data: {format: images, validate: {ranges: {x: {min: 0}}}}\n"),
			`pumps.yaml:2:35: data.validate.ranges: applies to csv and jsonl data, not format images`},
		{"duplicates on images", "", mergeTop(base, "data: {format: images, validate: {max_duplicate_fraction: 0.1}}\n"),
			`pumps.yaml:2:59: data.validate.max_duplicate_fraction: applies to csv and jsonl data, not format images`},
		{"label on images", "", mergeTop(base, "data: {format: images, label: y}\n"),
			`pumps.yaml:2:31: data.label: not used for format images (an image's class is its folder, or its row in labels.csv)`},
		{"image extension", "", mergeTop(base, "data: {format: images, validate: {files: {extensions: [.png, .gif]}}}\n"),
			`pumps.yaml:2:62: data.validate.files.extensions[1]: ".gif" is not an image format kiln decodes (want .png, .jpg, .jpeg)`},
		{"images class", "", mergeTop(base, "data: {format: images, validate: {labels: [cat, a/b]}}\n"),
			`pumps.yaml:2:49: data.validate.labels[1]: "a/b" is not a class an image folder can have (no /, no control characters, not . or ..)`},
		{"negative min_per_class", "", mergeTop(base, "data: {format: images, validate: {min_per_class: -1}}\n"),
			`pumps.yaml:2:50: data.validate.min_per_class: must not be negative (0 is no minimum)`},
		{"holdout file for images", "", mergeTop(base, "data: {format: images}\n") + "evaluate: {holdout: {file: /srv/h.csv}}\n",
			`pumps.yaml:7:28: evaluate.holdout.file: applies to csv and jsonl; images are held out by fraction (evaluate.holdout.fraction)`},
		{"retention", "", base + "retention: {models: 1}\n", `pumps.yaml:8:21: retention.models: 1 is too few (want at least 2: the live model and its standby)`},
		{"false alarm", "", base + "monitor: {target_false_alarm: 0}\n", `pumps.yaml:8:31: monitor.target_false_alarm: 0 is out of range (want above 0 and below 1, e.g. 0.01)`},
		{"log keep", "", base + "monitor: {log: {keep: 2w}}\n", `pumps.yaml:8:23: monitor.log.keep: invalid age "2w" (want e.g. 14d, 36h, 90m)`},
		{"log max_size", "", base + "monitor: {log: {max_size: 64Mi}}\n", `pumps.yaml:8:27: monitor.log.max_size: 64Mi is too small (want at least 128Mi: two log segments)`},
		{"log inputs", "", base + "monitor: {log: {inputs: some}}\n", `pumps.yaml:8:25: monitor.log.inputs: "some" is not all, none or sample F (e.g. sample 0.1)`},
		{"log sample", "", base + "monitor: {log: {inputs: sample 1.5}}\n", `pumps.yaml:8:25: monitor.log.inputs: sample "1.5" is not a fraction above 0 and below 1 (e.g. sample 0.1)`},
		{"int overflow", "", mergeTop(base, "train: {image: t:1, retries: 99999999999999999999}\n"),
			`pumps.yaml:4:30: train.retries: 99999999999999999999 is out of range`},
		{"unknown alias", "", base + "window: *w\n", `pumps.yaml:8:9: invalid YAML: unknown anchor 'w' referenced`},
		{"syntax on line 1", "", "name: [pumps\n", `pumps.yaml:2: invalid YAML: did not find expected ',' or ']'`},
		{"bad indentation", "", "name: pumps\ndata: {label: c}\n  x: y\n", `pumps.yaml:3: invalid YAML: did not find expected key`},
		{"scanner error", "", "name: pumps\ndata: a: b\n", `pumps.yaml:2: invalid YAML: mapping values are not allowed in this context`},
		{"alias to unknown", "", base + "x: &a 1\n", `pumps.yaml:8:1: x: unknown field (known: name, data, window, train, serve, evaluate, triggers, monitor, retention)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = "pumps.yaml"
			}
			p, err := config.ParsePipeline(file, []byte(tt.spec))
			if err == nil {
				t.Fatalf("ParsePipeline(%q) = %+v, want error %q", tt.spec, p, tt.want)
			}
			// A file may have several problems, one line each; the one this case
			// is about must be among them, and every line names the file.
			lines := strings.Split(err.Error(), "\n")
			if !slices.Contains(lines, tt.want) {
				t.Errorf("ParsePipeline error\n got: %s\nwant a line: %s\nspec:\n%s", err, tt.want, tt.spec)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, file+":") {
					t.Errorf("error line %q does not start with %s:", l, file)
				}
			}
		})
	}
}

// TestParsePipelineReportsEveryError: kiln pipelines validate names every
// problem of a file at once, one FILE:LINE:COL: field: message line each, in
// file order, whether the decoder or Validate found it; a section that did
// not decode is not also reported as missing its required keys.
func TestParsePipelineReportsEveryError(t *testing.T) {
	spec := `name: pumps
data:
  label: condition
  format: xml
train:
  image: kiln.local/trainer:1
  retries: many
  gpu: 1
serve: 5
evaluate: {metric: accuracy, gate: {min: 1.5}}
retention: {models: 1}
`
	_, err := config.ParsePipeline("pumps.yaml", []byte(spec))
	if err == nil {
		t.Fatal("ParsePipeline accepted a spec with five problems")
	}
	want := []string{
		`pumps.yaml:4:11: data.format: "xml" is not one of csv, jsonl, images, files`,
		`pumps.yaml:7:12: train.retries: want an integer, got "many"`,
		`pumps.yaml:8:3: train.gpu: unknown field`,
		`pumps.yaml:9:8: serve: want a mapping, got "5"`,
		`pumps.yaml:10:`,
		`pumps.yaml:11:`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q; want it to start with %q", i+1, lines[i], w)
		}
	}
}

func TestPipelineJSONKeys(t *testing.T) {
	p, err := config.LoadPipelineFile("../../examples/pipelines/pumps.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(p)
	for _, key := range []string{`"max_null_fraction":0.01`, `"memory":"2Gi"`, `"timeout":"30m"`, `"gpus":{"count":0}`, `"new_data":{"debounce":"10s"`, `"file":"../../examples/pipelines/pumps.yaml"`} {
		if !strings.Contains(string(j), key) {
			t.Errorf("JSON lacks %s:\n%s", key, j)
		}
	}
	var g config.GPUs
	if err := json.Unmarshal([]byte(`2`), &g); err != nil || g != (config.GPUs{Count: 2}) {
		t.Errorf("json.Unmarshal(2) = %+v, %v; want count 2", g, err)
	}
}

func TestValidateFieldError(t *testing.T) {
	p := &config.Pipeline{Name: "x"}
	err := p.Validate()
	var fe *config.FieldError
	if !errorsAs(err, &fe) || fe.Path != "data.format" {
		t.Fatalf("Validate(empty) = %v, want a FieldError at data.format", err)
	}
}

func TestLoadPipelines(t *testing.T) {
	good := string(mustRead(t, "testdata/minimal.yaml"))
	tests := []struct {
		name    string
		files   map[string]string
		want    []string // names loaded
		wantErr string   // {dir} is replaced by the folder
	}{
		{"empty", nil, []string{}, ""},
		{"two good, dot-files and other files ignored",
			map[string]string{"a.yaml": good, "b.yml": good, ".c.yaml": "bad: [", "notes.txt": "x", "d.yaml~": "x"},
			[]string{"a", "b"}, ""},
		{"one bad file rejects all",
			map[string]string{"a.yaml": good, "b.yaml": good + "trian: {}\n"},
			nil, `{dir}/b.yaml:4:1: trian: unknown field (known: name, data, window, train, serve, evaluate, triggers, monitor, retention)`},
		{"each bad file has a line",
			map[string]string{"a.yaml": "", "b.yaml": good, "c.yaml": "name: x\n" + good},
			nil, "{dir}/a.yaml: empty file (want a mapping of keys such as name:, data:)\n" +
				`{dir}/c.yaml:1:7: name: "x" differs from the file name "c" (a spec is named by its file; rename one of them)`},
		{"duplicate name", map[string]string{"a.yaml": good, "a.yml": good},
			nil, `{dir}/a.yml: pipeline "a" is also defined by {dir}/a.yaml (keep one of them)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			set, err := config.LoadPipelines(dir)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "{dir}", dir)
				if err == nil || err.Error() != want {
					t.Fatalf("LoadPipelines error\n got: %v\nwant: %s", err, want)
				}
				if set != nil {
					t.Errorf("LoadPipelines returned a set with its error: %v", set)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadPipelines: %v", err)
			}
			got := []string{}
			for name, p := range set {
				got = append(got, name)
				if p.Name != name {
					t.Errorf("set[%q].Name = %q", name, p.Name)
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpSorted); diff != "" {
				t.Errorf("names mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("missing dir", func(t *testing.T) {
		set, err := config.LoadPipelines(filepath.Join(t.TempDir(), "nope"))
		if err != nil || set == nil || len(set) != 0 {
			t.Errorf("LoadPipelines(missing) = %v, %v; want an empty set", set, err)
		}
	})
	t.Run("dir named like a spec", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "x.yaml"), 0o755)
		_, err := config.LoadPipelines(dir)
		if want := filepath.Join(dir, "x.yaml") + ": is a directory, not a spec file"; err == nil || err.Error() != want {
			t.Errorf("LoadPipelines error = %v, want %s", err, want)
		}
	})
}

func TestParsePipelineEdges(t *testing.T) {
	for _, spec := range []string{"---\n" + base, base + "---\n", base + "...\n"} {
		if _, err := config.ParsePipeline("pumps.yaml", []byte(spec)); err != nil {
			t.Errorf("ParsePipeline(%q) = %v, want it accepted", spec, err)
		}
	}
	big := base + "# " + strings.Repeat("x", 1<<20) + "\n"
	if _, err := config.ParsePipeline("pumps.yaml", []byte(big)); err == nil || !strings.HasPrefix(err.Error(), "pumps.yaml: file is ") {
		t.Errorf("ParsePipeline(2 MiB) = %v, want a size error", err)
	}
	long := strings.Replace(base, "name: pumps", "name: "+strings.Repeat("x", 500), 1)
	if _, err := config.ParsePipeline("-", []byte(long)); err == nil || len(err.Error()) > 200 {
		t.Errorf("ParsePipeline(long name) = %v, want a short error", err)
	}
}
