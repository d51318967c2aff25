package config_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-edge/kiln/daemon/config"
)

// FuzzPipelineRoundTrip: every spec ParsePipeline accepts reads back the same after being
// written out as YAML (`kiln pipelines show`) and as JSON (the API), and the copy that went
// through JSON still validates. A spec that does not round-trip would change meaning on its
// way to the CLI. Its seeds (the shipped example spec, the minimal one, and a few that use
// every kind of field) run in every `go test`.
func FuzzPipelineRoundTrip(f *testing.F) {
	for _, file := range []string{"../../examples/pipelines/pumps.yaml", "testdata/minimal.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"name: p\ndata: {format: jsonl, label: y, settle: 0s, validate: {max_null_fraction: 0.05, max_duplicate_fraction: 1, labels: [a, 'b,c'], ranges: {x: {min: -1e300, max: 5}}}}\ntrain: {image: 'sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + "', gpus: {count: 1, min_free: 8Gi}, timeout: 1h30m}\nserve: {image: kiln.local/s:1, protocol: v2}\n",
		"name: p\ndata: {format: csv}\ntrain: {image: kiln.local/t:1, resources: {memory: 1.5Gi, cpus: 0.25}}\nserve: {image: kiln.local/s:1}\nwindow: {days: 30}\nretention: {models: 1}\n",
		"name: p\ndata: {format: csv}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\ntriggers: {schedule: '*/5 1-3 * jan mon', degradation: alert}\nmonitor: {cooldown: 90s}\n",
		"name: p\ndata: {format: images, validate: {labels: [cat, dog], min_per_class: 3, drift: {psi_max: 0.2}, files: {extensions: [.png], max_count: 10}}}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := config.ParsePipeline("pumps.yaml", data)
		if err != nil {
			return
		}
		y, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("yaml.Marshal of an accepted spec: %v", err)
		}
		back, err := config.ParsePipeline("pumps.yaml", y)
		if err != nil {
			t.Fatalf("accepted %q; written as\n%s\nit reads back as an error: %v", data, y, err)
		}
		back.Digest = p.Digest // the digest is of the file's bytes
		if diff := cmp.Diff(p, back); diff != "" {
			t.Fatalf("YAML round trip of %q changed it (-want +got):\n%s", data, diff)
		}
		j, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var fromJSON config.Pipeline
		if err := json.Unmarshal(j, &fromJSON); err != nil {
			t.Fatalf("json.Unmarshal(%s): %v", j, err)
		}
		if diff := cmp.Diff(p, &fromJSON); diff != "" {
			t.Fatalf("JSON round trip of %q changed it (-want +got):\n%s", data, diff)
		}
		if err := fromJSON.Validate(); err != nil {
			t.Fatalf("the JSON copy of an accepted spec fails Validate: %v", err)
		}
	})
}
