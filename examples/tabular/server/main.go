// Command tabular-server is kiln's example serving image: `serve` loads
// /opt/ml/model/model.json and answers, in the formats DESIGN.md pins (and
// examples/tabular/testdata/golden.json proves):
//
//	GET  /ping                      200 once the model is loaded
//	POST /invocations               text/csv rows, no header, features in training order,
//	                                or application/jsonlines, one object a row keyed by
//	                                feature name (other keys ignored); one predicted
//	                                label per line, in order
//	GET  /v2/health/ready|live      Open Inference Protocol v2
//	GET  /v2/models/{name}[/ready]  name = the pipeline ($KILN_PIPELINE, else "model")
//	POST /v2/models/{name}/infer    input "input" FP64 [rows, features] -> output "label" BYTES [rows]
//
// It listens on the unix socket $KILN_SOCKET when set (no network needed),
// else on TCP port $SAGEMAKER_BIND_TO_PORT (default 8080) on all addresses.
// SIGTERM drains in-flight requests and exits 0. The listening, draining and the
// shared routes are examples/internal/sagemaker's; the model and its
// request formats are examples/tabular/model's.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
	"github.com/kiln-edge/kiln/examples/tabular/model"
)

func main() {
	modelDir := flag.String("model-dir", "/opt/ml/model", "folder holding model.json")
	flag.Parse()
	if flag.Arg(0) != "serve" {
		fmt.Fprintf(os.Stderr, "usage: tabular-server serve (got %q)\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	if err := run(*modelDir); err != nil {
		fmt.Fprintln(os.Stderr, "serve: "+err.Error())
		os.Exit(1)
	}
}

func run(modelDir string) error {
	// PID 1 in a container: without a handler SIGTERM would be ignored;
	// sagemaker.Serve drains and returns when it comes.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	m, err := model.Load(filepath.Join(modelDir, "model.json"))
	if err != nil {
		return err
	}
	name := sagemaker.ModelName()
	return sagemaker.Serve(ctx, model.NewHandler(m, name),
		fmt.Sprintf("serving model %s (%d features, classes %s)", name, len(m.Features), strings.Join(m.Classes, ",")))
}
