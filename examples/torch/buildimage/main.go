// Command buildimage writes kiln's PyTorch example image,
// kiln.local/torch-digits:1, as an OCI archive OUT/torch-digits.tar, from
// the rootfs folder mkrootfs.sh made (ROOTFS/.kiln-complete marks it whole).
// No Docker is needed. `make images-torch` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-edge/kiln/examples/torch"
	"github.com/kiln-edge/kiln/runtime/ocitar"
)

func main() {
	rootfs := flag.String("rootfs", "", "the rootfs folder examples/torch/mkrootfs.sh made")
	out := flag.String("o", "bin/images", "output folder")
	flag.Parse()
	if err := run(*rootfs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "buildimage: "+err.Error())
		os.Exit(1)
	}
}

func run(rootfs, out string) error {
	if rootfs == "" {
		return fmt.Errorf("-rootfs is required")
	}
	if _, err := os.Stat(filepath.Join(rootfs, ".kiln-complete")); err != nil {
		return fmt.Errorf("rootfs %s is not complete (no .kiln-complete): run examples/torch/mkrootfs.sh %s", rootfs, rootfs)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	start := time.Now()
	img, cleanup, err := torch.Build(rootfs, out)
	defer cleanup()
	if err != nil {
		return err
	}
	file := filepath.Join(out, torch.ArchiveName)
	if err := ocitar.WriteOCI(file, torch.Ref, img); err != nil {
		return err
	}
	d, err := ocitar.Digest(img)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\t%s\t%d MB in %s\n", file, torch.Ref, d, st.Size()>>20, time.Since(start).Round(time.Second))
	return nil
}
