package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The PNG is the SVG that `kiln models accuracy --svg` wrote, rasterised
// here: the same drawing, pixel for pixel where it matters, with no image
// library, converter or font installed. This reads the SVG subset kiln's
// chart package writes (svg, g, rect, line, polyline, circle, text with
// translate and rotate(-90), title) and refuses any other drawing element,
// so a chart that grows a new shape fails here rather than drawing less.
// It renders at ss times the size and averages down, for smooth edges.
const ss = 3

// rasterise draws svg as an image of the SVG's width and height.
func rasterise(svg []byte) (*image.RGBA, error) {
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var c *canvas
	var text *textRun // the <text> being read
	inTitle := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the SVG: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			a := attrs(t.Attr)
			if c == nil {
				if t.Name.Local != "svg" {
					return nil, fmt.Errorf("the SVG starts with <%s>, not <svg>", t.Name.Local)
				}
				w, h := a.num("width", 0), a.num("height", 0)
				if w < 1 || h < 1 || w > 8000 || h > 8000 {
					return nil, fmt.Errorf("<svg> size %vx%v is out of range", w, h)
				}
				c = newCanvas(int(w), int(h), a.num("font-size", 12))
				continue
			}
			if err := c.draw(t.Name.Local, a, &text, &inTitle); err != nil {
				return nil, err
			}
		case xml.CharData:
			if text != nil && !inTitle {
				text.s += string(t)
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "title":
				inTitle = false
			case "text":
				if text != nil {
					c.text(*text)
					text = nil
				}
			}
		}
	}
	if c == nil {
		return nil, errors.New("no <svg> element")
	}
	return c.image(), nil
}

// writePNG rasterises svg into path, crash-safe: a temp file, fsync, rename.
func writePNG(path string, svg []byte) error {
	img, err := rasterise(svg)
	if err != nil {
		return fmt.Errorf("draw %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".png-*")
	if err != nil {
		return err
	}
	err = png.Encode(f, img)
	if err == nil {
		err = f.Chmod(0o644) // a picture for people, as the SVG beside it
	}
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name()) // the temp file, if still there
	}
	return err
}

type attrMap map[string]string

func attrs(as []xml.Attr) attrMap {
	m := attrMap{}
	for _, a := range as {
		m[a.Name.Local] = a.Value
	}
	return m
}

func (a attrMap) num(k string, def float64) float64 {
	v, err := strconv.ParseFloat(strings.TrimSuffix(a[k], "px"), 64)
	if err != nil {
		return def
	}
	return v
}

// textRun is one <text>: where, how and what.
type textRun struct {
	x, y, size     float64
	anchor, middle string
	rot            bool // rotate(-90): reading upwards
	col            color.RGBA
	s              string
}

type canvas struct {
	w, h     int // in SVG units
	fontSize float64
	px       []color.RGBA // (w*ss) x (h*ss), opaque
}

func newCanvas(w, h int, fontSize float64) *canvas {
	c := &canvas{w: w, h: h, fontSize: fontSize, px: make([]color.RGBA, w*ss*h*ss)}
	for i := range c.px {
		c.px[i] = color.RGBA{255, 255, 255, 255}
	}
	return c
}

// draw paints one element (or starts reading a text's characters).
func (c *canvas) draw(name string, a attrMap, text **textRun, inTitle *bool) error {
	switch name {
	case "g":
		if a["transform"] != "" {
			return errors.New("a <g> with a transform, which this rasteriser does not apply")
		}
	case "title":
		*inTitle = true
	case "rect":
		x, y := a.num("x", 0), a.num("y", 0)
		w, h := a.num("width", 0), a.num("height", 0)
		if a["width"] == "100%" {
			w = float64(c.w)
		}
		if a["height"] == "100%" {
			h = float64(c.h)
		}
		if col, ok := paint(a["fill"], "black"); ok {
			c.fillRect(x, y, x+w, y+h, col)
		}
		if col, ok := paint(a["stroke"], "none"); ok {
			sw := a.num("stroke-width", 1)
			pts := [][2]float64{{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}, {x, y}}
			c.polyline(pts, sw, nil, col)
		}
	case "line":
		if col, ok := paint(a["stroke"], "none"); ok {
			pts := [][2]float64{{a.num("x1", 0), a.num("y1", 0)}, {a.num("x2", 0), a.num("y2", 0)}}
			c.polyline(pts, a.num("stroke-width", 1), dashes(a["stroke-dasharray"]), col)
		}
	case "polyline":
		var pts [][2]float64
		for _, p := range strings.Fields(a["points"]) {
			xs, ys, _ := strings.Cut(p, ",")
			x, err1 := strconv.ParseFloat(xs, 64)
			y, err2 := strconv.ParseFloat(ys, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("<polyline> point %q is not x,y", p)
			}
			pts = append(pts, [2]float64{x, y})
		}
		if col, ok := paint(a["stroke"], "none"); ok {
			c.polyline(pts, a.num("stroke-width", 1), dashes(a["stroke-dasharray"]), col)
		}
	case "circle":
		if col, ok := paint(a["fill"], "black"); ok {
			c.fillCircle(a.num("cx", 0), a.num("cy", 0), a.num("r", 0), col)
		}
	case "text":
		col, _ := paint(a["fill"], "black")
		t := &textRun{x: a.num("x", 0), y: a.num("y", 0), size: a.num("font-size", c.fontSize),
			anchor: a["text-anchor"], middle: a["dominant-baseline"], col: col}
		if tr := a["transform"]; tr != "" {
			var tx, ty float64
			if n, err := fmt.Sscanf(tr, "translate(%g %g) rotate(-90)", &tx, &ty); err != nil || n != 2 {
				return fmt.Errorf("<text> transform %q: only translate(X Y) rotate(-90) is drawn", tr)
			}
			t.x, t.y, t.rot = tx+t.x, ty+t.y, true
		}
		*text = t
	default:
		return fmt.Errorf("the SVG has a <%s>, which this rasteriser does not draw", name)
	}
	return nil
}

// paint reads a colour attribute; ok is false for none.
func paint(v, def string) (color.RGBA, bool) {
	if v == "" {
		v = def
	}
	switch v {
	case "none", "transparent":
		return color.RGBA{}, false
	case "white":
		return color.RGBA{255, 255, 255, 255}, true
	case "black":
		return color.RGBA{0, 0, 0, 255}, true
	}
	h := strings.TrimPrefix(v, "#")
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	n, err := strconv.ParseUint(h, 16, 32)
	if len(h) != 6 || err != nil {
		return color.RGBA{0, 0, 0, 255}, true // an unknown name: ink, not nothing
	}
	return color.RGBA{uint8(n >> 16), uint8(n >> 8), uint8(n), 255}, true
}

func dashes(v string) []float64 {
	var out []float64
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' }) {
		if d, err := strconv.ParseFloat(f, 64); err == nil && d > 0 {
			out = append(out, d)
		}
	}
	if len(out)%2 == 1 {
		out = append(out, out...)
	}
	return out
}

func (c *canvas) set(x, y int, col color.RGBA) {
	if x >= 0 && y >= 0 && x < c.w*ss && y < c.h*ss {
		c.px[y*c.w*ss+x] = col
	}
}

// fillRect fills [x0,x1)x[y0,y1) in SVG units.
func (c *canvas) fillRect(x0, y0, x1, y1 float64, col color.RGBA) {
	for y := int(math.Round(y0 * ss)); y < int(math.Round(y1*ss)); y++ {
		for x := int(math.Round(x0 * ss)); x < int(math.Round(x1*ss)); x++ {
			c.set(x, y, col)
		}
	}
}

func (c *canvas) fillCircle(cx, cy, r float64, col color.RGBA) {
	cx, cy, r = cx*ss, cy*ss, r*ss
	for y := int(cy - r); y <= int(cy+r)+1; y++ {
		for x := int(cx - r); x <= int(cx+r)+1; x++ {
			if dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy; dx*dx+dy*dy <= r*r {
				c.set(x, y, col)
			}
		}
	}
}

// polyline strokes pts with width w, the dash pattern running on across
// the joints as SVG's does.
func (c *canvas) polyline(pts [][2]float64, w float64, dash []float64, col color.RGBA) {
	period := 0.0
	for _, d := range dash {
		period += d
	}
	along := 0.0
	half := math.Max(w*ss/2, 0.75) // a hairline still shows
	for i := 1; i < len(pts); i++ {
		ax, ay, bx, by := pts[i-1][0]*ss, pts[i-1][1]*ss, pts[i][0]*ss, pts[i][1]*ss
		dx, dy := bx-ax, by-ay
		l2 := dx*dx + dy*dy
		for y := int(math.Min(ay, by) - half); y <= int(math.Max(ay, by)+half)+1; y++ {
			for x := int(math.Min(ax, bx) - half); x <= int(math.Max(ax, bx)+half)+1; x++ {
				px, py := float64(x)+0.5, float64(y)+0.5
				t := 0.0
				if l2 > 0 {
					t = math.Max(0, math.Min(1, ((px-ax)*dx+(py-ay)*dy)/l2))
				}
				qx, qy := ax+t*dx-px, ay+t*dy-py
				if qx*qx+qy*qy > half*half {
					continue
				}
				if period > 0 && !inDash(math.Mod(along+t*math.Sqrt(l2)/ss, period), dash) {
					continue
				}
				c.set(x, y, col)
			}
		}
		along += math.Sqrt(l2) / ss
	}
}

// inDash reports whether position p (within one period) falls on a dash.
func inDash(p float64, dash []float64) bool {
	for i, d := range dash {
		if p < d {
			return i%2 == 0
		}
		p -= d
	}
	return false
}

// text draws a run in the bitmap font: a font pixel is a tenth of the
// font size, so capitals stand 0.7 and characters advance 0.6 of it.
func (c *canvas) text(t textRun) {
	s := strings.TrimSpace(t.s)
	p := t.size / 10
	width := (float64(len([]rune(s)))*glyphAdvance - 1) * p
	u0 := 0.0 // along the reading direction, from the anchor
	switch t.anchor {
	case "middle":
		u0 = -width / 2
	case "end":
		u0 = -width
	}
	base := 0.0 // the baseline, across the reading direction
	if t.middle == "middle" || t.middle == "central" {
		base = glyphAscent * p / 2
	}
	for i, ch := range []rune(s) {
		g := glyph(ch)
		for r := range glyphH {
			for col := range glyphW {
				if g[r]&(1<<(glyphW-1-col)) == 0 {
					continue
				}
				u := u0 + (float64(i*glyphAdvance+col))*p
				v := base + float64(r-glyphAscent)*p
				if t.rot { // rotate(-90): reading goes up the page
					c.fillRect(t.x+v, t.y-u-p, t.x+v+p, t.y-u, t.col)
				} else {
					c.fillRect(t.x+u, t.y+v, t.x+u+p, t.y+v+p, t.col)
				}
			}
		}
	}
}

// image averages each ss x ss block into one pixel.
func (c *canvas) image() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, c.w, c.h))
	for y := range c.h {
		for x := range c.w {
			var r, g, b int
			for dy := range ss {
				for dx := range ss {
					p := c.px[(y*ss+dy)*c.w*ss+x*ss+dx]
					r, g, b = r+int(p.R), g+int(p.G), b+int(p.B)
				}
			}
			n := ss * ss
			img.SetRGBA(x, y, color.RGBA{uint8(r / n), uint8(g / n), uint8(b / n), 255})
		}
	}
	return img
}
