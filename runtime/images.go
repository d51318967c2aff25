package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Image is one image record: a tag, or the pin kiln keeps for each imported
// manifest (Name is then the digest itself).
type Image struct {
	Name    string    `json:"name"`
	Digest  string    `json:"digest"` // of the manifest (or index) the name points at
	Size    int64     `json:"size"`   // of the manifest's content, layers included, compressed
	Created time.Time `json:"created"`
	Pinned  bool      `json:"pinned"` // Name is the digest: kept until GC drops the digest
}

// Import reads an OCI image archive or a `docker save` archive from rd,
// stores it, unpacks it for the snapshotter, and pins each imported manifest
// under its own digest so that retagging never loses what a run recorded.
// progress, when not nil, is called with the bytes read so far (at most
// every 64 KiB read). It returns every tag and pin it created or updated.
func (r *Runtime) Import(ctx context.Context, rd io.Reader, progress func(bytes int64)) ([]Image, error) {
	// The guard refuses a hostile archive at its first bad header, before containerd stores it.
	cr := &countingReader{r: newArchiveGuard(rd, defaultArchiveLimits), fn: progress}
	imported, err := r.c.Import(ctx, cr,
		client.WithImageRefTranslator(normalizeRef),
		client.WithDigestRef(func(d digest.Digest) string { return d.String() }),
		client.WithSkipDigestRef(func(string) bool { return false }),
	)
	if err != nil {
		return nil, fmt.Errorf("import image archive (after %d bytes): %w", cr.n.Load(), err)
	}
	if progress != nil {
		progress(cr.n.Load())
	}
	if len(imported) == 0 {
		return nil, errors.New("import image archive: it holds no image for this platform")
	}
	unpacked := map[string]bool{}
	out := make([]Image, 0, len(imported))
	for _, im := range imported {
		img := client.NewImage(r.c, im)
		d := im.Target.Digest.String()
		if !unpacked[d] {
			if err := img.Unpack(ctx, r.snapshotter); err != nil {
				return nil, fmt.Errorf("unpack %s (%s) for %s: %w", im.Name, d, r.snapshotter, err)
			}
			unpacked[d] = true
		}
		out = append(out, r.imageView(ctx, im))
	}
	r.log.Info("imported images", "count", len(out), "bytes", cr.n.Load())
	return out, nil
}

// normalizeRef names an image from an archive's annotation: a full reference
// keeps its normalized form (busybox -> docker.io/library/busybox:latest, as
// docker would); a bare tag ("latest", as skopeo writes into ref.name) names
// nothing and the image is reachable by its digest pin alone.
func normalizeRef(name string) string {
	n, err := reference.ParseDockerRef(name)
	if err != nil || !strings.ContainsAny(name, "/:") {
		return ""
	}
	return n.String()
}

// List returns every image in kiln's namespace, sorted by name.
func (r *Runtime) List(ctx context.Context) ([]Image, error) {
	ims, err := r.c.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]Image, 0, len(ims))
	for _, im := range ims {
		out = append(out, r.imageView(ctx, im))
	}
	slices.SortFunc(out, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (r *Runtime) imageView(ctx context.Context, im images.Image) Image {
	v := Image{Name: im.Name, Digest: im.Target.Digest.String(), Created: im.CreatedAt,
		Pinned: im.Name == im.Target.Digest.String()}
	if size, err := client.NewImage(r.c, im).Size(ctx); err == nil {
		v.Size = size
	}
	return v
}

// Resolve turns ref (a tag such as kiln.local/tabular-trainer:1, a short
// docker name, or a digest "sha256:...") into the manifest digest a run
// records. A missing image is ErrImageNotFound naming ref.
func (r *Runtime) Resolve(ctx context.Context, ref string) (string, error) {
	im, err := r.getImage(ctx, ref)
	if err != nil {
		return "", err
	}
	return im.Target.Digest.String(), nil
}

func (r *Runtime) getImage(ctx context.Context, ref string) (images.Image, error) {
	is := r.c.ImageService()
	names := []string{ref}
	if at := strings.LastIndex(ref, "@"); at >= 0 {
		names = append(names, ref[at+1:])
	}
	if n := normalizeRef(ref); n != "" && n != ref {
		names = append(names, n)
	}
	for _, name := range names {
		im, err := is.Get(ctx, name)
		if err == nil {
			return im, nil
		}
		if !errdefs.IsNotFound(err) {
			return images.Image{}, fmt.Errorf("look up image %s: %w", ref, err)
		}
	}
	return images.Image{}, fmt.Errorf("%w: %s is not in containerd namespace %q; import it with `kiln images import FILE`",
		ErrImageNotFound, ref, r.namespace)
}

// GC deletes every image record (tag or pin) whose digest is not in keep,
// and lets containerd collect the content and snapshots nothing references
// any more. Containers keep their own snapshots, so a running task is never
// affected. It returns what it removed.
func (r *Runtime) GC(ctx context.Context, keep []string) ([]Image, error) {
	ims, err := r.c.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var drop []images.Image
	for _, im := range ims {
		if !slices.Contains(keep, im.Target.Digest.String()) {
			drop = append(drop, im)
		}
	}
	var removed []Image
	for i, im := range drop {
		v := r.imageView(ctx, im)
		var opts []images.DeleteOpt
		if i == len(drop)-1 {
			// One synchronous collection at the end, not one per image.
			opts = append(opts, images.SynchronousDelete())
		}
		if err := r.c.ImageService().Delete(ctx, im.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("delete image %s: %w", im.Name, err)
		}
		removed = append(removed, v)
	}
	if len(removed) > 0 {
		r.log.Info("image gc", "removed", len(removed), "kept_digests", len(keep))
	}
	return removed, nil
}

type countingReader struct {
	r    io.Reader
	n    atomic.Int64
	last int64
	fn   func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	total := c.n.Add(int64(n))
	if c.fn != nil && total-c.last >= 64<<10 {
		c.last = total
		c.fn(total)
	}
	return n, err
}
