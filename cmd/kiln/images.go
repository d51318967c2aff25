package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
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

// progressAfter: smaller archives import without a progress line.
const progressAfter = 32 << 20

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
	cr := &countReader{r: f}
	done := make(chan struct{})
	if st.Size() >= progressAfter && isTerminal(os.Stderr) {
		go func() {
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					fmt.Fprintf(os.Stderr, "\r%s\n", progressLine(st.Size(), st.Size()))
					return
				case <-t.C:
					fmt.Fprintf(os.Stderr, "\r%s", progressLine(cr.n.Load(), st.Size()))
				}
			}
		}()
	} else if st.Size() >= progressAfter {
		fmt.Fprintf(os.Stderr, "importing %s (%s)\n", c.File, humanSize(st.Size()))
	}
	res, err := e.client().ImportImages(e.ctx, cr)
	close(done)
	if err != nil {
		return fmt.Errorf("import %s: %w", c.File, err)
	}
	if e.json() {
		return writeJSON(e.out, res)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE")
	for _, im := range res.Images {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", im.ID, im.Digest, humanSize(im.Size))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.out, "imported %s in %.1fs\n", humanSize(res.Bytes), res.Seconds)
	return err
}

func progressLine(n, total int64) string {
	pct := 100 * float64(n) / float64(max(total, 1))
	return fmt.Sprintf("sent %s of %s (%.0f%%)", humanSize(n), humanSize(total), pct)
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
	for _, im := range ims {
		name := im.ID
		if im.State == "pinned" {
			name = "(pinned)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, shortDigest(im.Digest), humanSize(im.Size), im.Created.Format(time.RFC3339))
	}
	return tw.Flush()
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

type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
