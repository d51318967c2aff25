package contract

import "bytes"

// CountRows returns how many rows a request body holds, cheaply and without
// allocating: for text/csv and application/jsonlines (SageMaker) the
// non-empty lines (a final line without newline counts); for an image
// (application/x-image, image/png, image/jpeg: SageMaker, one image a
// request) 1, or 0 for an empty body; for application/json (OIP v2) the
// first dimension of the first input's "shape" (rows of FP64, images of
// BYTES alike). 0 when unknown: another content type, or a body that does
// not parse far enough to say.
//
// It does not decode the body. A CSV field with a quoted newline counts as
// two rows; the prediction log wants a cheap count per request, and the
// models kiln serves take numeric features, where that never happens.
func CountRows(contentType string, body []byte) int {
	switch mediaType(contentType) {
	case mediaCSV, mediaJSONLines:
		return countLines(body)
	case mediaJSON:
		return v2Rows(body)
	case mediaImage:
		if len(body) == 0 {
			return 0
		}
		return 1
	}
	return 0
}

const (
	mediaOther = iota
	mediaCSV
	mediaJSON
	mediaJSONLines
	mediaImage
)

// mediaType classifies a Content-Type header without allocating
// (mime.ParseMediaType builds a map): the type before any parameters,
// compared case-insensitively.
func mediaType(ct string) int {
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' {
			ct = ct[:i]
			break
		}
	}
	ct = trimSpace(ct)
	switch {
	case equalFold(ct, "text/csv"):
		return mediaCSV
	case equalFold(ct, "application/json"):
		return mediaJSON
	case equalFold(ct, "application/jsonlines"):
		return mediaJSONLines
	case equalFold(ct, "application/x-image"), equalFold(ct, "image/png"), equalFold(ct, "image/jpeg"):
		return mediaImage
	}
	return mediaOther
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFold is strings.EqualFold for ASCII, which is all a media type holds.
func equalFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// countLines counts the lines holding something other than blanks; a line
// of only "\r" (CRLF input) or spaces is empty.
func countLines(body []byte) int {
	n := 0
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		for _, c := range line {
			if c != ' ' && c != '\t' && c != '\r' {
				n++
				break
			}
		}
	}
	return n
}

// v2Rows finds inputs[0].shape[0] in an OIP v2 request by scanning the JSON
// in place: the keys may come in any order and "data", which is most of the
// body, is skipped without being decoded.
func v2Rows(body []byte) int {
	s := scanner{b: body}
	if !s.enterObject() {
		return 0
	}
	if !s.findKey("inputs") || !s.consume('[') {
		return 0
	}
	if !s.enterObject() || !s.findKey("shape") || !s.consume('[') {
		return 0
	}
	return s.uint()
}

// scanner is a forward-only JSON reader over b that allocates nothing. Its
// methods return false on anything it does not expect; CountRows then
// answers 0, the body's owner (the model server) says what is wrong with it.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) enterObject() bool { return s.consume('{') }

// findKey reads the members of the object just entered until the key named
// key, leaving the scanner after its ':'. Keys are compared raw: a key
// spelled with escapes does not match, which no encoder does for ASCII.
func (s *scanner) findKey(key string) bool {
	for first := true; ; first = false {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			return false
		}
		if !first && !s.consume(',') {
			return false
		}
		start, end, ok := s.str()
		if !ok || !s.consume(':') {
			return false
		}
		if string(s.b[start:end]) == key { // the conversion in a comparison does not allocate
			return true
		}
		if !s.skipValue() {
			return false
		}
	}
}

// str reads a string and returns the bounds of its raw contents.
func (s *scanner) str() (start, end int, ok bool) {
	if !s.consume('"') {
		return 0, 0, false
	}
	start = s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			end = s.i
			s.i++
			return start, end, true
		default:
			s.i++
		}
	}
	return 0, 0, false
}

// skipValue steps over one value of any kind; nested arrays and objects are
// skipped by counting brackets outside strings.
func (s *scanner) skipValue() bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

// uint reads a non-negative integer; 0 for anything else (a negative or
// fractional shape is no row count).
func (s *scanner) uint() int {
	s.ws()
	n, digits := 0, 0
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		if n > (1<<31)/10 { // absurd; not a count this package should trust
			return 0
		}
		n = n*10 + int(s.b[s.i]-'0')
		s.i++
		digits++
	}
	if digits == 0 {
		return 0
	}
	if s.i >= len(s.b) { // a body cut short inside the shape
		return 0
	}
	switch s.b[s.i] {
	case ',', ']', ' ', '\t', '\r', '\n':
		return n
	}
	return 0
}
