package torch_test

import (
	"testing"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/examples/torch"
)

// The example pipeline parses, and names this image for both verbs.
func TestDigitsPipeline(t *testing.T) {
	p, err := config.LoadPipelineFile("../pipelines/digits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "digits" || p.Data.Format != config.FormatImages || p.Train.Image != torch.Ref || p.Serve.Image != torch.Ref {
		t.Errorf("digits.yaml: name %q, format %q, train.image %q, serve.image %q; want digits, images and %s twice",
			p.Name, p.Data.Format, p.Train.Image, p.Serve.Image, torch.Ref)
	}
	if p.Evaluate.Gate.Min == nil || *p.Evaluate.Gate.Min != 0.9 || p.Evaluate.Metric != "accuracy" {
		t.Errorf("digits.yaml gate = %+v on %q; want accuracy >= 0.9, the bar make test-torch holds the example to", p.Evaluate.Gate, p.Evaluate.Metric)
	}
}
