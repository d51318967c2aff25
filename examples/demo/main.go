// Command demo is `make demo`: kiln's whole loop on this machine, narrated
// step by step, against a private containerd (run it under
// .ci/with-containerd) and a scratch root that it removes at the end, with
// kilnd, its containers and their mounts.
//
//  1. a first batch of real data (the UCI breast cancer set) is validated,
//     trained in a container, scored by kilnd and put live; a prediction;
//  2. a batch with a schema error goes to quarantine, with its reason;
//  3. a batch whose labels are all swapped: its model's fate at the gate;
//  4. labelled feedback from the true distribution: the monitor rolls back;
//  5. a shift that hurts live and standby alike: a retraining run;
//  6. the live model's lineage, the event timeline, and the accuracy
//     picture as SVG and PNG files; the dashboard (`kiln ui`) on this
//     state, checked and, with chromium, screenshotted;
//  7. images: the PyTorch digits (examples/torch) in two batch folders, a
//     small CNN trained and scored by kilnd, PNG files predicted, a batch
//     with a corrupt PNG quarantined; skipped, with one line saying so,
//     when the images folder has no torch-digits.tar (make images-torch).
//
// With -ui (make demo UI=1) kilnd and `kiln ui` stay up at the end until
// Ctrl-C, then everything is cleaned up as without it.
//
// Every step is read back with `kiln ... -o json`; the demo exits non-zero
// when one did not happen, and when anything of it is left behind. Its test
// (demo_test.go) runs the same scenario under make test.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var opt options
	flag.StringVar(&opt.bin, "bin", "bin", "folder holding kilnd and kiln (make build)")
	flag.StringVar(&opt.images, "images", "bin/images", "folder holding the example image archives (make images)")
	flag.StringVar(&opt.data, "data", "examples/tabular/data/breast_cancer.csv", "the breast cancer CSV")
	flag.StringVar(&opt.digitsSpec, "digits-spec", "examples/pipelines/digits.yaml", "the PyTorch digits pipeline (step 7, when -images holds torch-digits.tar)")
	flag.StringVar(&opt.out, "out", "bin/demo", "folder the accuracy charts and the dashboard's screenshots are written to")
	flag.BoolVar(&opt.ui, "ui", false, "at the end, keep kilnd and kiln ui --listen 127.0.0.1:8400 running until Ctrl-C, then clean up")
	flag.Parse()
	opt.containerd = os.Getenv("KILN_TEST_CONTAINERD")
	if opt.containerd == "" {
		fmt.Fprintln(os.Stderr, "demo: KILN_TEST_CONTAINERD is not set: run it under .ci/with-containerd (make demo does)")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: containers need root: run make demo as root")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	if _, err := demoRun(ctx, opt, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed after %.0fs: %v\n", time.Since(t0).Seconds(), err)
		os.Exit(1)
	}
	fmt.Printf("\nThe loop closed in %.0fs; kilnd, its containers, mounts and scratch root are gone.\n", time.Since(t0).Seconds())
}
