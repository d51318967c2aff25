package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

type imagesCmd struct {
	Import imagesImportCmd `cmd:"" help:"Import an OCI image archive or a 'docker save' archive (streamed to kilnd)."`
	Ls     imagesLsCmd     `cmd:"" default:"1" help:"List images (tags and digest pins)."`
}

type imagesImportCmd struct {
	File string `arg:"" type:"existingfile" help:"Archive to import (OCI layout tar or docker save tar)."`
}

func (c imagesImportCmd) Run(e *cmdEnv) error {
	f, err := os.Open(c.File)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // opened read-only
	st, err := f.Stat()
	if err != nil {
		return err
	}
	p := startProgress("sent", st.Size())
	res, err := e.client().ImportImages(e.ctx, p.Reader(f))
	p.Finish()
	if err != nil {
		return fmt.Errorf("import %s: %w", c.File, err)
	}
	if e.json() {
		return writeJSON(e.out, res)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE")
	for _, im := range imageRows(res.Images) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", im.name, im.Digest, humanSize(im.Size))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.out, "imported %s in %.1fs\n", humanSize(res.Bytes), res.Seconds)
	return err
}

type imagesLsCmd struct{}

func (imagesLsCmd) Run(e *cmdEnv) error {
	ims, err := e.client().Images(e.ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, ims)
	}
	return printImages(e.out, ims)
}

func printImages(w io.Writer, ims []api.Image) error {
	tw := table(w)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tCREATED")
	for _, im := range imageRows(ims) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.name, shortDigest(im.Digest), humanSize(im.Size), im.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

type imageRow struct {
	api.Image
	name string // its tags, comma-separated; "(untagged)" for a pin alone
}

// imageRows is one row per image (per manifest digest), in the order the
// digests first appear. kilnd keeps a pin named by the digest beside each
// tag, so that removing a tag never drops an image a model needs; a table
// row for the pin too would list every image twice. -o json keeps every
// entry, each with its state.
func imageRows(ims []api.Image) []imageRow {
	var rows []imageRow
	at := map[string]int{}
	for _, im := range ims {
		i, seen := at[im.Digest]
		if !seen {
			at[im.Digest] = len(rows)
			rows = append(rows, imageRow{Image: im})
			i = len(rows) - 1
		}
		if im.State != "pinned" {
			if rows[i].name != "" {
				rows[i].name += ","
			}
			rows[i].name += im.ID
		}
	}
	for i := range rows {
		if rows[i].name == "" {
			rows[i].name = "(untagged)"
		}
	}
	return rows
}

func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return d
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
