// Package imagedata writes deterministic synthetic labelled image batches
// for kiln's tests and benchmarks, in torchvision's ImageFolder layout
// (<dir>/<label>/<n>.png) that an images pipeline ingests.
//
// Every image is a dark noisy background with one bright disc whose place
// says the class: class k of n sits at angle 2πk/n on a circle around the
// centre, jittered by a few pixels, with a random tint, background and
// brightness. The class is learnable from a small grayscale thumbnail (the
// example image trainer reaches ~100% on up to 8 classes) and the pictures
// still vary, so batches differ in content hash and in their statistics.
// The same arguments give the same bytes on one Go toolchain: the random
// stream is this package's own (splitmix64), not math/rand's.
package imagedata

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// SuccessMarker closes a batch folder.
const SuccessMarker = "_SUCCESS"

// Options shape a batch; the zero value is 32x32 PNGs.
type Options struct {
	Size       int  // width and height in pixels; default 32
	JPEG       bool // write every other image as <n>.jpg (quality 90) instead of PNG
	Gray       bool // grayscale images (r = g = b)
	Brightness int  // added to every channel (clamped): a lighting change for drift tests
}

// File is one written image.
type File struct {
	Path  string // relative to the batch folder, slash-separated: "<label>/<n>.png"
	Label string
	Data  []byte
}

// Generate makes perClass images of each class in memory, in class order
// then index order.
func Generate(classes []string, perClass int, seed int64, opt Options) ([]File, error) {
	if len(classes) == 0 || perClass < 0 {
		return nil, fmt.Errorf("imagedata: %d classes, %d per class: want at least one class", len(classes), perClass)
	}
	if opt.Size == 0 {
		opt.Size = 32
	}
	if opt.Size < 8 || opt.Size > 1024 {
		return nil, fmt.Errorf("imagedata: size %d: want 8 to 1024", opt.Size)
	}
	rng := newRand(uint64(seed)) //nolint:gosec // a seed's bits as they are
	// One reused encoder buffer: a fresh zlib writer per image costs more
	// than the image.
	enc := png.Encoder{BufferPool: &onePool{}}
	var out []File
	for k, label := range classes {
		for i := range perClass {
			img := draw(k, len(classes), rng, opt)
			var buf bytes.Buffer
			ext := "png"
			var err error
			if opt.JPEG && i%2 == 1 {
				ext = "jpg"
				err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
			} else {
				err = enc.Encode(&buf, img)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, File{Path: fmt.Sprintf("%s/%d.%s", label, i, ext), Label: label, Data: buf.Bytes()})
		}
	}
	return out, nil
}

// Write writes Generate's images under dir (created as needed) and returns
// them. It does not close the batch: call Close once everything is there.
func Write(dir string, classes []string, perClass int, seed int64, opt Options) ([]File, error) {
	files, err := Generate(classes, perClass, seed, opt)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// Close writes dir's _SUCCESS marker: last, so a watcher never sees a
// closed batch with images still arriving.
func Close(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, SuccessMarker), nil, 0o644)
}

// Corrupt is a PNG that fails to decode: a valid signature and header
// followed by truncated, garbled image data.
func Corrupt() []byte {
	var buf bytes.Buffer
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	var v byte
	for i := range img.Pix {
		img.Pix[i] = v
		v += 7
	}
	if err := png.Encode(&buf, img); err != nil {
		panic(err) // encoding an in-memory image cannot fail
	}
	b := buf.Bytes()
	b = b[:len(b)*2/3]
	for i := 40; i < len(b); i += 5 {
		b[i] ^= 0x5a
	}
	return b
}

// WriteCorrupt writes Corrupt() to path, creating its folder.
func WriteCorrupt(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, Corrupt(), 0o644)
}

// draw paints one image of class k of n.
func draw(k, n int, rng *rand, opt Options) image.Image {
	s := float64(opt.Size)
	angle := 2 * math.Pi * float64(k) / float64(n)
	jit := s / 16
	cx := s/2 + 0.3*s*math.Cos(angle) + (rng.float()*2-1)*jit
	cy := s/2 + 0.3*s*math.Sin(angle) + (rng.float()*2-1)*jit
	radius := s * (0.13 + 0.04*rng.float())
	bg := 30 + 50*rng.float()
	fg := 170 + 70*rng.float()
	tint := [3]float64{0.8 + 0.4*rng.float(), 0.8 + 0.4*rng.float(), 0.8 + 0.4*rng.float()}
	if opt.Gray {
		tint = [3]float64{1, 1, 1}
	}
	img := image.NewRGBA(image.Rect(0, 0, opt.Size, opt.Size))
	for y := range opt.Size {
		for x := range opt.Size {
			dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
			v := bg
			if dx*dx+dy*dy <= radius*radius {
				v = fg
			}
			v += (rng.float()*2 - 1) * 25
			var c [3]uint8
			for ch := range c {
				c[ch] = clamp(v*tint[ch] + float64(opt.Brightness))
			}
			img.SetRGBA(x, y, color.RGBA{c[0], c[1], c[2], 255})
		}
	}
	return img
}

func clamp(v float64) uint8 {
	return uint8(math.Round(math.Max(0, math.Min(255, v))))
}

// onePool keeps one png encoder buffer for one goroutine's images.
type onePool struct{ b *png.EncoderBuffer }

func (p *onePool) Get() *png.EncoderBuffer  { return p.b }
func (p *onePool) Put(b *png.EncoderBuffer) { p.b = b }

// rand is splitmix64: tiny, and its stream never changes with Go releases.
type rand struct{ s uint64 }

func newRand(seed uint64) *rand { return &rand{s: seed} }

func (r *rand) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float is uniform in [0, 1).
func (r *rand) float() float64 { return float64(r.next()>>11) / (1 << 53) }
