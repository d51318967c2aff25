package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// demoRun starts a box, runs the scenario on it and closes the box; on a
// failed step the end of kilnd's log is printed before the box goes.
func demoRun(ctx context.Context, opt options, out io.Writer) (report, error) {
	data, err := loadCancer(opt.data)
	if err != nil {
		return report{}, err
	}
	b, err := startBox(ctx, opt)
	if err != nil {
		return report{}, err
	}
	fmt.Fprintf(out, "kilnd started under %s (containerd namespace %s)\n", b.root, b.ns)
	rep, err := runScenario(ctx, b, data, out)
	if err == nil && opt.ui {
		err = holdUI(ctx, b, out)
	}
	if err != nil {
		fmt.Fprintf(out, "\nkilnd's log, last lines:\n%s\n", b.logTail(15))
	}
	return rep, errors.Join(err, b.close())
}
