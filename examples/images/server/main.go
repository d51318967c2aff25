// Command image-server is kiln's example image serving image: `serve` loads
// /opt/ml/model/model.json (examples/images/model) and answers, in the
// formats of the image serving contract (examples/images/testdata/golden.json
// proves them byte for byte):
//
//	GET  /ping                      200 once the model is loaded
//	POST /invocations               Content-Type application/x-image, the body one
//	                                PNG or JPEG; the predicted label and a newline (text/csv)
//	GET  /v2/health/ready|live      Open Inference Protocol v2
//	GET  /v2/models/{name}[/ready]  name = the pipeline ($KILN_PIPELINE, else "model")
//	POST /v2/models/{name}/infer    input "input" BYTES [n], base64 images -> output "label" BYTES [n]
//
// An image that does not decode is a 400 with a one-line reason. It listens
// on the unix socket $KILN_SOCKET when set (no network needed), else on TCP
// port $SAGEMAKER_BIND_TO_PORT (default 8080) on all addresses. SIGTERM
// drains in-flight requests and exits 0. The listening, draining and the
// shared routes are examples/internal/sagemaker's; the model and its
// request formats are examples/images/model's.
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

	"github.com/kiln-edge/kiln/examples/images/model"
	"github.com/kiln-edge/kiln/examples/internal/sagemaker"
)

func main() {
	modelDir := flag.String("model-dir", "/opt/ml/model", "folder holding model.json")
	flag.Parse()
	if flag.Arg(0) != "serve" {
		fmt.Fprintf(os.Stderr, "usage: image-server serve (got %q)\n", strings.Join(flag.Args(), " "))
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
		fmt.Sprintf("serving model %s (%dx%d, classes %s)", name, m.Size, m.Size, strings.Join(m.Classes, ",")))
}
