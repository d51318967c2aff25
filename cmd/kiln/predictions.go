package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

type predictionsCmd struct {
	Purge predictionsPurgeCmd `cmd:"" help:"Delete records from a pipeline's prediction log (admin); recorded as an event without the inputs."`
}

type predictionsPurgeCmd struct {
	Pipeline string `arg:"" help:"The pipeline whose log to purge."`
	Before   string `help:"Delete the records of requests answered before this time: RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02, midnight UTC)." xor:"bound" required:""`
	ID       string `name:"id" help:"Delete the records of this request id (X-Kiln-Request-Id, without a :row suffix)." xor:"bound" required:""`
}

func (c predictionsPurgeCmd) Run(e *cmdEnv) error {
	req := api.PurgeRequest{ID: c.ID}
	if c.Before != "" {
		t, err := parseBound(c.Before)
		if err != nil {
			return err
		}
		req.Before = t
	}
	res, err := e.client().PurgePredictions(e.ctx, c.Pipeline, req)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, res)
	}
	fmt.Fprintf(e.out, "purged %s of %s (%s rewritten or removed, %s removed)\n",
		plural(res.Records, "record"), res.Pipeline, plural(res.Segments, "segment"), plural(res.InputFiles, "input file"))
	return nil
}

// parseBound reads --before: a full RFC 3339 time or a date.
func parseBound(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("--before " + s + ": want an RFC 3339 time (2026-01-02T15:04:05Z) or a date (2026-01-02)")
}
