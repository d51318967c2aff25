package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/config"
)

// FuzzParsePipeline: reload parses whatever lands in the pipelines folder inside the daemon, so
// no input may panic, and every error must stay one line.
func FuzzParsePipeline(f *testing.F) {
	for _, file := range []string{"../../examples/pipelines/pumps.yaml", "testdata/minimal.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "---\n---\n", "a: &a [*a]\n", "x: &x {y: *x}", "name: [pumps\n", "\tname: x\n",
		"train: {gpus: {count: 1}}\n", "evaluate: {holdout: {file: /x}}\n", "triggers: {schedule: '*/5 1-3 * jan mon'}\n",
		"<<: {name: x}\n", "data: {validate: {ranges: {a: {min: 1}}}}\n", "? [a]\n: b\n", "a: !!binary aGk=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := config.ParsePipeline("f.yaml", data)
		if err != nil {
			// One line per problem, each naming the file.
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "f.yaml") {
					t.Fatalf("error line %q for %q does not name the file: %q", l, data, err)
				}
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePipeline accepted a spec that Validate rejects: %v", err)
		}
	})
}
