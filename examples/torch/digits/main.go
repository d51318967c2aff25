// Command digits writes scikit-learn's 8x8 digits data set (1,797 images,
// from Debian's python3-sklearn .deb, cached under /var/cache/kiln/digits)
// as kiln images batches: OUT/<digit>/<n>.png and OUT/_SUCCESS last. With
// -batches N > 1 it writes N batches OUT/batch-1 ... OUT/batch-N, image i
// into batch i mod N, so each holds every digit; -n takes the first n
// images only.
//
//	go run ./examples/torch/digits -o /var/lib/kiln/drop/digits/b1
//	go run ./examples/torch/digits -o /var/lib/kiln/drop/digits -batches 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kiln-edge/kiln/examples/torch"
)

func main() {
	out := flag.String("o", "", "output folder: the batch (or, with -batches > 1, the folder of batches)")
	batches := flag.Int("batches", 1, "split into this many batches")
	n := flag.Int("n", 0, "write only the first n images (0: all 1,797)")
	cache := flag.String("cache", torch.DefaultDigitsCache, "where digits.csv.gz is kept once extracted")
	flag.Parse()
	if err := run(*out, *batches, *n, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "digits: "+err.Error())
		os.Exit(1)
	}
}

func run(out string, batches, n int, cache string) error {
	if out == "" {
		return fmt.Errorf("-o is required")
	}
	if batches < 1 {
		return fmt.Errorf("-batches %d: want 1 or more", batches)
	}
	all, err := torch.LoadDigits(context.Background(), cache)
	if err != nil {
		return err
	}
	if n > 0 && n < len(all) {
		all = all[:n]
	}
	parts := make([][]torch.Digit, batches)
	names := make([][]int, batches)
	for i, d := range all {
		parts[i%batches] = append(parts[i%batches], d)
		names[i%batches] = append(names[i%batches], i)
	}
	for b := range parts {
		dir := out
		if batches > 1 {
			dir = filepath.Join(out, "batch-"+strconv.Itoa(b+1))
		}
		if err := torch.WriteBatch(dir, parts[b], names[b]); err != nil {
			return err
		}
		fmt.Printf("%s\t%d images\n", dir, len(parts[b]))
	}
	return nil
}
