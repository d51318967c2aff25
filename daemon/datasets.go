package daemon

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/storage"
)

// handleDatasets lists dataset versions and quarantined batches, of one
// pipeline (?pipeline=P) or all, oldest first.
func (d *Daemon) handleDatasets(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("pipeline")
	if p != "" && !storage.ValidPipeline(p) {
		localapi.WriteError(w, http.StatusBadRequest, "pipeline "+p+": not a pipeline name")
		return
	}
	var ds []storage.Dataset
	if err := d.store.View(func(tx *storage.Tx) error {
		var err error
		ds, err = tx.Datasets(p)
		return err
	}); err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]api.Dataset, 0, len(ds))
	for _, x := range ds {
		out = append(out, datasetView(x))
	}
	localapi.WriteJSON(w, http.StatusOK, out)
}

func datasetView(x storage.Dataset) api.Dataset {
	v := api.Dataset{ID: x.ID, Pipeline: x.Pipeline, Kind: string(x.Kind), Format: x.Format, State: string(x.State), Created: x.Created,
		Digest: x.Digest, Rows: x.Rows, Files: []api.DatasetFile{}, ReleasedBy: x.Released, Suspect: x.Suspect}
	for _, f := range ingest.DataFiles(x) {
		v.Files = append(v.Files, api.DatasetFile{Path: f.Path, Size: f.Blob.Size, Digest: f.Blob.Digest, Label: f.Label, Holdout: f.Holdout})
	}
	if x.State == storage.DatasetQuarantined || x.State == storage.DatasetReleased || x.State == storage.DatasetExpired {
		v.Reason = x.Reason
	}
	return v
}

// datasetID is the full ID a dataset route names.
func datasetID(r *http.Request) string { return r.PathValue("pipeline") + "/" + r.PathValue("id") }

// handleDataset shows one dataset with its manifest, validation report and
// lineage.
func (d *Daemon) handleDataset(w http.ResponseWriter, r *http.Request) {
	id := datasetID(r)
	x, err := d.store.Dataset(id)
	if err != nil {
		writeDatasetError(w, id, err)
		return
	}
	out := api.DatasetDetail{Dataset: datasetView(x), Upstream: []api.LineageNode{}, Downstream: []api.LineageNode{}}
	if meta, err := ingest.ReadMeta(d.store, x); err == nil {
		out.Report = meta.Report
		if meta.Manifest != nil {
			out.Manifest = meta.Manifest
			for _, p := range meta.Manifest.Parts {
				out.Parts = append(out.Parts, api.DatasetFile{Path: p.Name, Size: p.Size, Digest: p.Digest, Rows: p.Rows})
			}
		}
	} else {
		d.log.Warn("dataset meta unreadable", "dataset", id, "err", err)
	}
	if up, err := d.store.Ancestors(id, 0); err == nil {
		for _, n := range up {
			out.Upstream = append(out.Upstream, api.LineageNode{ID: n.ID, Depth: n.Depth, Edge: string(n.Edge)})
		}
	}
	if down, err := d.store.Descendants(id, 0); err == nil {
		for _, n := range down {
			out.Downstream = append(out.Downstream, api.LineageNode{ID: n.ID, Depth: n.Depth, Edge: string(n.Edge)})
		}
	}
	if x.State == storage.DatasetQuarantined {
		dir := filepath.Join(d.cfg.Paths.QuarantineDir, id)
		if _, err := os.Stat(dir); err == nil { //nolint:gosec // G703: kiln's own quarantine folder, under an ID the store just found
			out.QuarantineDir = dir
		}
	}
	localapi.WriteJSON(w, http.StatusOK, out)
}

// handleDatasetRelease re-admits a quarantined batch, or a suspect version back into
// training windows, recorded with the caller's uid.
func (d *Daemon) handleDatasetRelease(w http.ResponseWriter, r *http.Request) {
	id := datasetID(r)
	x, err := d.ingest.Release(r.Context(), id, actorFrom(r.Context()))
	if err != nil {
		writeDatasetError(w, id, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, datasetView(x))
}

func writeDatasetError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		localapi.WriteError(w, http.StatusNotFound, "no dataset "+id+" (list them with `kiln datasets`)")
	case errors.Is(err, storage.ErrInvalid):
		localapi.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ingest.ErrNotQuarantined), errors.Is(err, ingest.ErrUnread):
		localapi.WriteError(w, http.StatusConflict, err.Error())
	default:
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
	}
}
