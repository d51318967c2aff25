// Command buildimages writes kiln's example images as OCI archives:
// OUT/tabular-trainer.tar (kiln.local/tabular-trainer:1),
// OUT/tabular-server.tar (kiln.local/tabular-server:1),
// OUT/image-trainer.tar (kiln.local/image-trainer:1) and
// OUT/image-server.tar (kiln.local/image-server:1). No Docker is needed;
// the digests are reproducible. `make images` runs it with -o bin/images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/kiln-edge/kiln/examples/tabular/images"
)

func main() {
	out := flag.String("o", "bin/images", "output folder")
	flag.Parse()
	built, err := images.BuildAll(context.Background(), *out, images.Examples)
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildimages: "+err.Error())
		os.Exit(1)
	}
	for _, b := range built {
		fmt.Printf("%s\t%s\t%s\n", b.File, b.Ref, b.Digest)
	}
}
