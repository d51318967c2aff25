package torch

import (
	"bytes"
	"compress/gzip"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gz(t *testing.T, s string) *bytes.Reader {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b.Bytes())
}

func row(pixel string, label string) string {
	return strings.Repeat(pixel+",", 64) + label + "\n"
}

func TestParseDigitsAndPNG(t *testing.T) {
	ds, err := ParseDigits(gz(t, row("0", "3")+row("16", "7")+strings.Replace(row("8", "0"), "8,", "4.0,", 1)), "d.csv.gz")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || ds[0].Label != 3 || ds[1].Label != 7 || ds[1].Gray[10] != 255 || ds[2].Gray[0] != 64 || ds[2].Gray[1] != 128 {
		t.Fatalf("parsed %+v; want labels 3 7 0 and 16 -> 255, 4 -> 64, 8 -> 128", ds)
	}
	img, err := png.Decode(bytes.NewReader(ds[2].PNG()))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := img.(*image.Gray)
	if !ok || g.Bounds().Dx() != 8 || g.Bounds().Dy() != 8 || g.GrayAt(0, 0).Y != 64 || g.GrayAt(1, 0).Y != 128 {
		t.Errorf("PNG decodes to %T %v; want an 8x8 gray image with the digit's levels", img, img.Bounds())
	}
}

func TestParseDigitsNamesTheBadCell(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{row("0", "3") + row("17", "1"), "line 2, column 1: \"17\""},
		{row("0", "12"), "line 1, column 65"},
		{row("0", "3") + "1,2\n", "line 2"},
		{"", "no digits"},
	} {
		if _, err := ParseDigits(gz(t, tc.data), "d.csv.gz"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseDigits(%.20q...) = %v; want an error with %q", tc.data, err, tc.want)
		}
	}
}

func TestWriteBatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b1")
	ds := []Digit{{Label: 4}, {Label: 9}}
	if err := WriteBatch(dir, ds, []int{10, 11}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"4/0010.png", "9/0011.png", "_SUCCESS"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("batch lacks %s: %v", f, err)
		}
	}
	if err := WriteBatch(dir, ds, []int{1}); err == nil {
		t.Error("WriteBatch with fewer names than digits: no error")
	}
}
