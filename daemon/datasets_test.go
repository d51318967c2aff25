//go:build cgo

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// TestDatasetsDropShowRelease: a CSV renamed into drop/<p>/ becomes a dataset
// version listed by the API; a batch failing validation is quarantined, shown
// with its reason, and released by the caller, recorded with their uid.
func TestDatasetsDropShowRelease(t *testing.T) {
	ctx := context.Background()
	root := shortRoot(t)
	paths := config.NewPaths(root, "")
	spec := "data: {format: csv, label: y, settle: 0s, validate: {rows: {min: 5}}}\n" +
		"train: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n"
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.PipelinesDir, "iris.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	td := startTestDaemon(t, root, gputest.New(1, gpus.A100_SXM4_40GB))
	drop := filepath.Join(paths.DropDir, "iris")
	waitUntil(t, "drop folder", func() bool { _, err := os.Stat(drop); return err == nil })
	put := func(name string, rows int) {
		var b strings.Builder
		b.WriteString("a,b,y\n")
		for i := range rows {
			fmt.Fprintf(&b, "%d,%d,c%d\n", i, i*i, i%3)
		}
		tmp := filepath.Join(drop, "."+name)
		if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(drop, name)); err != nil {
			t.Fatal(err)
		}
	}
	put("good.csv", 50)
	put("short.csv", 2)
	var list []string
	waitUntil(t, "two datasets", func() bool {
		ds, err := td.client.Datasets(ctx, "iris")
		list = nil
		for _, d := range ds {
			list = append(list, d.ID+"="+d.State)
		}
		return err == nil && len(ds) == 2
	})
	ds, _ := td.client.Datasets(ctx, "")
	var quarantined string
	for _, d := range ds {
		if d.Digest == "" || len(d.Files) != 1 || d.Created.IsZero() {
			t.Errorf("listed dataset lacks fields: %+v", d)
		}
		switch d.State {
		case "accepted":
			if d.Rows != 50 || d.Reason != "" {
				t.Errorf("accepted = %+v", d)
			}
		case "quarantined":
			quarantined = d.ID
			if !strings.HasPrefix(d.Reason, "rows") {
				t.Errorf("quarantined reason = %q", d.Reason)
			}
		}
	}
	if quarantined == "" {
		t.Fatalf("no quarantined dataset in %v", list)
	}
	show, err := td.client.Dataset(ctx, quarantined)
	if err != nil {
		t.Fatal(err)
	}
	if show.Report == nil || show.Manifest == nil || len(show.Upstream) == 0 {
		t.Errorf("show = %+v", show)
	}
	rel, err := td.client.ReleaseDataset(ctx, quarantined)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != "released" || rel.ReleasedBy != "uid:"+strconv.Itoa(os.Getuid()) {
		t.Errorf("released = %+v", rel)
	}
	var apiErr *apiclient.Error
	if _, err := td.client.ReleaseDataset(ctx, quarantined); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Errorf("second release: %v, want 409", err)
	}
	if _, err := td.client.Dataset(ctx, "iris/d99"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Errorf("missing dataset: %v, want 404", err)
	}
	if !strings.Contains(eventKinds(t, td), "dataset.released") {
		t.Errorf("events lack dataset.released: %s", eventKinds(t, td))
	}
}
