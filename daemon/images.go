package daemon

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/runtime"
)

// handleImagesImport streams the request body (an OCI or docker archive)
// into containerd: nothing is buffered in kilnd or written to its disk.
func (d *Daemon) handleImagesImport(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var read int64
	ims, err := d.rt.Import(r.Context(), r.Body, func(n int64) { read = n })
	if err != nil {
		localapi.WriteError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	res := api.ImportResult{Images: imageViews(ims), Bytes: read, Seconds: time.Since(start).Seconds()}
	refs := make([]string, 0, len(ims))
	for _, im := range ims {
		refs = append(refs, im.Name)
	}
	d.recordEvent(r.Context(), "images.imported", "", refs, map[string]string{
		"bytes": strconv.FormatInt(read, 10), "images": strconv.Itoa(len(ims)),
	})
	localapi.WriteJSON(w, http.StatusOK, res)
}

func (d *Daemon) handleImages(w http.ResponseWriter, r *http.Request) {
	ims, err := d.rt.List(r.Context())
	if err != nil {
		localapi.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("list images: %v", err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, imageViews(ims))
}

func imageViews(ims []runtime.Image) []api.Image {
	out := make([]api.Image, 0, len(ims))
	for _, im := range ims {
		state := "tagged"
		if im.Pinned {
			state = "pinned"
		}
		out = append(out, api.Image{ID: im.Name, Digest: im.Digest, Size: im.Size, Created: im.Created.UTC(), State: state})
	}
	return out
}
