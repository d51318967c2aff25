package torch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultDigitsCache is where digits.csv.gz is kept once extracted.
const DefaultDigitsCache = "/var/cache/kiln/digits"

// The data set's file inside Debian's python3-sklearn package.
const (
	sklearnPackage = "python3-sklearn"
	digitsInDeb    = "./usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
	digitsFile     = "digits.csv.gz"
)

// Digit is one 8x8 image of scikit-learn's digits data set (1,797 images,
// UCI's optical recognition of handwritten digits): gray levels 0-255,
// scaled from the data set's 0-16.
type Digit struct {
	Label int
	Gray  [64]uint8 // row-major
}

// PNG is the digit as an 8x8 grayscale PNG.
func (d Digit) PNG() []byte {
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	for i, g := range d.Gray {
		img.SetGray(i%8, i/8, color.Gray{Y: g})
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img) // cannot fail on an in-memory image.Gray
	return b.Bytes()
}

// LoadDigits reads the data set from cacheDir/digits.csv.gz, first
// extracting it there from python3-sklearn's .deb (apt-get download, so from
// the host's apt sources; the package is not installed).
func LoadDigits(ctx context.Context, cacheDir string) ([]Digit, error) {
	file := filepath.Join(cacheDir, digitsFile)
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if err := fetchDigits(ctx, cacheDir); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseDigits(f, file)
}

// ParseDigits parses digits.csv.gz: per line 64 pixel values 0-16, then the label.
func ParseDigits(r io.Reader, name string) ([]Digit, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cr := csv.NewReader(zr)
	cr.FieldsPerRecord = 65
	var out []Digit
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		var d Digit
		for i, s := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v < 0 || (i < 64 && v > 16) || (i == 64 && (v > 9 || v != math.Trunc(v))) {
				return nil, fmt.Errorf("%s: line %d, column %d: %q is not a pixel 0-16 or a digit label", name, line, i+1, s)
			}
			if i == 64 {
				d.Label = int(v)
			} else {
				d.Gray[i] = uint8(math.Round(v * 255 / 16))
			}
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no digits", name)
	}
	return out, nil
}

// fetchDigits downloads python3-sklearn's .deb into a scratch folder and
// extracts digits.csv.gz from it into cacheDir, atomically.
func fetchDigits(ctx context.Context, cacheDir string) error {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("digits cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".fetch-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a scratch folder
	// apt drops privileges to _apt for the download when it can write here.
	_ = os.Chmod(tmp, 0o777)
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", sklearnPackage)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s (for its digits.csv.gz; apt-get update first?): %v: %s",
			sklearnPackage, err, strings.TrimSpace(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, sklearnPackage+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files in %s", sklearnPackage, len(debs), tmp)
	}
	var stderr bytes.Buffer
	deb := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", debs[0])
	deb.Stderr = &stderr
	data, err := deb.Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v: %s", filepath.Base(debs[0]), err, strings.TrimSpace(stderr.String()))
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("%s holds no %s", filepath.Base(debs[0]), digitsInDeb)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(debs[0]), err)
		}
		if h.Name != digitsInDeb {
			continue
		}
		part := filepath.Join(tmp, digitsFile)
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if _, err := ParseDigits(bytes.NewReader(b), digitsInDeb); err != nil {
			return err
		}
		if err := os.WriteFile(part, b, 0o644); err != nil {
			return err
		}
		return os.Rename(part, filepath.Join(cacheDir, digitsFile))
	}
}

// WriteBatch writes digits as one images batch in torchvision's ImageFolder
// layout, dir/<label>/<name>.png with name from names (the digit's index in
// the data set, say), then dir/_SUCCESS last, which closes the batch for
// kilnd's watcher.
func WriteBatch(dir string, digits []Digit, names []int) error {
	if len(names) != len(digits) {
		return fmt.Errorf("%d names for %d digits", len(names), len(digits))
	}
	for i, d := range digits {
		p := filepath.Join(dir, strconv.Itoa(d.Label), fmt.Sprintf("%04d.png", names[i]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, d.PNG(), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "_SUCCESS"), nil, 0o644)
}
