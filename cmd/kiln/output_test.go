package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestPrintChecksLayout: a long detail pads nothing (it is the last column)
// and each fix sits on its own line under the details.
func TestPrintChecksLayout(t *testing.T) {
	long := "not in containerd (or containerd is down): " + strings.Repeat("pumps: kiln.local/tabular-trainer:1, ", 4)
	checks := []api.Check{
		{Name: "containerd", Result: api.CheckOK, Detail: "containerd 1.6.20 at /run/containerd/containerd.sock"},
		{Name: "images", Result: api.CheckFail, Detail: long, Fix: "kiln images import FILE"},
		{Name: "nvml", Result: api.CheckWarn, Detail: "no NVIDIA driver: CPU-only", Fix: "install the NVIDIA driver"},
		{Name: "cdi", Result: api.CheckOK, Detail: "none needed: no GPUs"},
	}
	var b strings.Builder
	if err := printChecks(&b, checks); err != nil {
		t.Fatal(err)
	}
	want := "OK    containerd  containerd 1.6.20 at /run/containerd/containerd.sock\n" +
		"FAIL  images      " + long + "\n" +
		"                  fix: kiln images import FILE\n" +
		"WARN  nvml        no NVIDIA driver: CPU-only\n" +
		"                  fix: install the NVIDIA driver\n" +
		"OK    cdi         none needed: no GPUs\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("printChecks (-want +got):\n%s", diff)
	}
}

// TestBuildLine: kiln version shows the package version dpkg shows beside
// git's version and commit.
func TestBuildLine(t *testing.T) {
	b := api.BuildInfo{Version: "v1.2.3-4-gabc1234", Commit: "abc1234def", BuildDate: "2026-11-30T11:00:00Z", GoVersion: "go1.25.0"}
	if got, want := buildLine(b, "1.2.3+4.gabc1234-1"), "package 1.2.3+4.gabc1234-1, git v1.2.3-4-gabc1234 (commit abc1234def, built 2026-11-30T11:00:00Z, go1.25.0)"; got != want {
		t.Errorf("buildLine = %q; want %q", got, want)
	}
	if got, want := buildLine(api.BuildInfo{Version: "dev", GoVersion: "go1.25.0"}, ""), "git dev (commit unknown, built unknown, go1.25.0)"; got != want {
		t.Errorf("buildLine of a dev build = %q; want %q", got, want)
	}
}

// TestValidateReportsEveryError: kiln pipelines validate prints every
// problem of every file, one FILE:LINE: field: message line each, then fails
// with a count.
func TestValidateReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "pumps.yaml")
	spec := "name: pumps\ndata: {label: c, format: xml}\ntrain: {image: t:1, retries: many}\nserve: {image: s:1}\nretention: {models: 1}\n"
	if err := os.WriteFile(bad, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "iris.yaml")
	if err := os.WriteFile(good, []byte("data: {label: y}\ntrain: {image: t:1}\nserve: {image: s:1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr, err := os.CreateTemp(dir, "stderr")
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = stderr
	t.Cleanup(func() { os.Stderr = old })
	out, err := os.CreateTemp(dir, "out")
	if err != nil {
		t.Fatal(err)
	}
	e := &cmdEnv{ctx: context.Background(), g: globals{Output: "table"}, out: out}
	runErr := pipelinesValidateCmd{Files: []string{bad, good}}.Run(e)
	os.Stderr = old
	printed, _ := os.ReadFile(stderr.Name())
	want := bad + ":2:26: data.format: \"xml\" is not one of csv, jsonl, images, files\n" +
		bad + ":3:30: train.retries: want an integer, got \"many\"\n" +
		bad + ":5:21: retention.models: 1 is too few (want at least 2: the live model and its standby)\n"
	if diff := cmp.Diff(want, string(printed)); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if runErr == nil || runErr.Error() != "3 problems in 1 of 2 files" {
		t.Errorf("Run = %v; want 3 problems in 1 of 2 files", runErr)
	}
	if ok, _ := os.ReadFile(out.Name()); string(ok) != "iris.yaml: ok (pipeline iris)\n" {
		t.Errorf("stdout %q; want the good file ok", ok)
	}
}
