package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
	"unsafe"
)

// Record is one request answered by a model, as the prediction log keeps it.
type Record struct {
	ID          string // the request id (X-Kiln-Request-Id); row i of it is ID + ":" + i
	Model       string // the model that answered, e.g. "iris/m7"
	Protocol    string // the pipeline's serve.protocol when it was logged: "sagemaker" or "v2"
	ContentType string // the request's Content-Type
	Time        time.Time
	LatencyUS   int64
	Status      int
	Rows        int    // rows in the request (contract.CountRows); 0 when unknown
	Input       []byte // the request body; nil when not kept
	InputKept   bool
	Output      []byte // the response body, whole unless OutputTruncated
	// OutputTruncated says the response was longer than Options.OutputCap
	// and Output holds its start only; such an answer cannot be scored.
	OutputTruncated bool
}

// ErrNotFound is returned (wrapped) by Lookup for a request id that is not
// in the log, or no longer: expired, purged or dropped.
var ErrNotFound = errors.New("not found")

// On disk a segment is a 16-byte header (segMagic, then the creation time
// in unix nanoseconds) followed by frames:
//
//	0  u32 n      length of what follows the crc
//	4  u32 crc    CRC-32C of those n bytes
//	8  u8  version (2)
//	9  u8  flags  (flagInputInline | flagInputFile | flagOutputCut)
//	10 u16 status
//	12 i64 time, unix nanoseconds
//	20 i64 latency, microseconds
//	28 u32 rows
//	32 u8 len(id), u8 len(model), u8 len(protocol), u8 len(content type)
//	36 u32 len(input field), u32 len(output)
//	44 id, model, protocol, content type, input field, output
//
// The input field is the raw body (flagInputInline), or for a body kept as
// a file (flagInputFile) its sha256 and its length (u64), or empty. All
// integers are little-endian. A frame torn by a crash fails its length or
// its crc; it can only be the last of a segment (each start and each
// rotation opens a new segment), and readers stop there.
const (
	segMagic      = "KILNPL\x00\x02"
	segHeaderSize = 16
	frameHeader   = 44
	recordVersion = 2

	flagInputInline = 1
	flagInputFile   = 2
	flagOutputCut   = 4
	// flagInputPending marks a record in the writer's buffer whose raw
	// input the writer still has to place inline or in a file; it never
	// reaches the disk.
	flagInputPending = 0x80

	fileRefSize = 32 + 8
	// maxFrame bounds a frame's length field, so a torn length cannot make
	// a reader allocate gigabytes.
	maxFrame = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame is a decoded frame header; its byte fields are views into the
// frame it was parsed from.
type frame struct {
	flags   byte
	status  int
	time    int64
	latency int64
	rows    int
	id      []byte
	model   []byte
	proto   []byte
	ctype   []byte
	input   []byte
	output  []byte
}

// parseFrame decodes the frame at the start of b, which must hold all of
// it (n+8 bytes); it checks the crc when check is set.
func parseFrame(b []byte, check bool) (frame, error) {
	if len(b) < 8+frameHeader-8 {
		return frame{}, errors.New("short frame")
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < frameHeader-8 || n > maxFrame || len(b) < 8+n {
		return frame{}, fmt.Errorf("bad frame length %d", n)
	}
	body := b[8 : 8+n]
	if check && crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return frame{}, errors.New("frame crc mismatch")
	}
	if b[8] != recordVersion {
		return frame{}, fmt.Errorf("record version %d, want %d", b[8], recordVersion)
	}
	f := frame{
		flags:   b[9],
		status:  int(binary.LittleEndian.Uint16(b[10:])),
		time:    int64(binary.LittleEndian.Uint64(b[12:])), //nolint:gosec // written from an int64
		latency: int64(binary.LittleEndian.Uint64(b[20:])), //nolint:gosec // written from an int64
		rows:    int(binary.LittleEndian.Uint32(b[28:])),
	}
	lens := [6]int{int(b[32]), int(b[33]), int(b[34]), int(b[35]),
		int(binary.LittleEndian.Uint32(b[36:])), int(binary.LittleEndian.Uint32(b[40:]))}
	p := frameHeader
	var parts [6][]byte
	for i, l := range lens {
		if l > 8+n-p {
			return frame{}, errors.New("frame fields overrun its length")
		}
		parts[i] = b[p : p+l : p+l]
		p += l
	}
	if p != 8+n {
		return frame{}, errors.New("frame length does not match its fields")
	}
	f.id, f.model, f.proto, f.ctype, f.input, f.output = parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]
	if f.flags&flagInputFile != 0 && len(f.input) != fileRefSize {
		return frame{}, errors.New("bad input file reference")
	}
	return f, nil
}

// frameLen is the whole length of the frame starting at b (which holds at
// least 8 bytes).
func frameLen(b []byte) int { return 8 + int(binary.LittleEndian.Uint32(b)) }

// appendFrame appends a frame to b with the given fields; the crc and the
// row count are filled in by the writer (sealFrame) unless rows >= 0.
func appendFrame(b []byte, flags byte, status int, t time.Time, lat time.Duration, rows int,
	id []byte, model, proto string, ctype, input, output []byte) []byte {
	model, proto = clip255(model), clip255(proto)
	if len(ctype) > 255 {
		ctype = ctype[:255]
	}
	if len(id) > 255 {
		id = id[:255]
	}
	n := frameHeader - 8 + len(id) + len(model) + len(proto) + len(ctype) + len(input) + len(output)
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(n)) //nolint:gosec // bounded by the buffer
	h[8] = recordVersion
	h[9] = flags
	binary.LittleEndian.PutUint16(h[10:], uint16(min(max(status, 0), 65535))) //nolint:gosec // clamped
	binary.LittleEndian.PutUint64(h[12:], uint64(t.UnixNano()))               //nolint:gosec // bit pattern kept
	binary.LittleEndian.PutUint64(h[20:], uint64(lat.Microseconds()))         //nolint:gosec // bit pattern kept
	binary.LittleEndian.PutUint32(h[28:], uint32(max(rows, 0)))               //nolint:gosec // rows fit
	h[32], h[33], h[34], h[35] = byte(len(id)), byte(len(model)), byte(len(proto)), byte(len(ctype))
	binary.LittleEndian.PutUint32(h[36:], uint32(len(input)))  //nolint:gosec // bounded by MaxRequestBytes
	binary.LittleEndian.PutUint32(h[40:], uint32(len(output))) //nolint:gosec // bounded by OutputCap
	b = append(b, h[:]...)
	b = append(b, id...)
	b = append(b, model...)
	b = append(b, proto...)
	b = append(b, ctype...)
	b = append(b, input...)
	return append(b, output...)
}

func clip255(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}

// sealFrame writes the crc of the frame at the start of b.
func sealFrame(b []byte) {
	n := frameLen(b)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:n], castagnoli))
}

// idHash is the key of the on-disk index and of the input sampling: FNV-1a
// 64, written out so it allocates nothing, and stable across processes and
// versions (hash/maphash is seeded per process), finished with a 64-bit
// mixer. The mixer matters: the endpoint's ids share a prefix and end in a
// counter, and plain FNV-1a leaves the high bits of such ids far from
// uniform, which made the index's interpolation search take ~32 probes a
// lookup instead of ~5 (measured on 200k endpoint ids).
func idHash[S ~string | ~[]byte](id S) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= prime
	}
	return mix64(h)
}

// record turns a parsed frame into a Record; input is the body when it was
// kept in a file (read by the caller), else ignored.
func (f *frame) record(fileInput []byte, fileKept bool) Record {
	r := Record{
		ID: string(f.id), Model: string(f.model), Protocol: string(f.proto), ContentType: string(f.ctype),
		Time: time.Unix(0, f.time), LatencyUS: f.latency, Status: f.status, Rows: f.rows,
		Output: append([]byte{}, f.output...), OutputTruncated: f.flags&flagOutputCut != 0,
	}
	switch {
	case f.flags&flagInputInline != 0:
		r.Input, r.InputKept = append([]byte{}, f.input...), true
	case f.flags&flagInputFile != 0 && fileKept:
		r.Input, r.InputKept = fileInput, true
	}
	return r
}

// borrowed is record without copies: ID, Input and Output alias the frame's
// buffer (valid while the frame is), the short strings are interned.
func (f *frame) borrowed(intern map[string]string) Record {
	str := func(b []byte) string {
		if v, ok := intern[string(b)]; ok { // no allocation for the lookup
			return v
		}
		v := string(b)
		intern[v] = v
		return v
	}
	r := Record{
		Model: str(f.model), Protocol: str(f.proto), ContentType: str(f.ctype),
		Time: time.Unix(0, f.time), LatencyUS: f.latency, Status: f.status, Rows: f.rows,
		Output: f.output, OutputTruncated: f.flags&flagOutputCut != 0,
	}
	if len(f.id) > 0 {
		r.ID = unsafe.String(&f.id[0], len(f.id))
	}
	if f.flags&flagInputInline != 0 {
		r.Input, r.InputKept = f.input, true
	}
	return r
}
