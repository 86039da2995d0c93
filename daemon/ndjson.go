package daemon

import (
	"bufio"
	"bytes"
	"io"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ollama/ollama/format"
)

// This file reads Ollama's NDJSON answers the way
// github.com/ollama/ollama/api's Client.stream does, without its costs: the
// client gives every request an 8 MB zeroed line buffer and decodes every
// line twice with encoding/json. Here a stream's line buffer starts at
// 1 KiB and comes from a pool, and the content chunks that make up almost
// all of an answer are read in one pass without allocating (parseChunk).
// Every line parseChunk does not accept takes the client's own two
// json.Unmarshal calls (see stream.slowLine), so what a call observes is
// what the client would have returned. FuzzChunkFastPath checks the one
// pass against the two decodes.

// clientLineLimit is the Ollama client's bufio.Scanner maximum token size
// (api.maxBufferSize): a line that needs a larger buffer, newline included,
// ends the client's stream without an error.
const clientLineLimit = 8 * format.MegaByte

const (
	// lineBufStart is the size of a new stream's line buffer: larger than
	// a content chunk (~150 bytes) and a final chunk (~400 bytes).
	lineBufStart = 1 << 10
	// pooledBufMax is the largest buffer put back into bufPool; larger
	// ones (a stream that met a huge line, a very long answer) are left to
	// the garbage collector, so idle buffers stay small.
	pooledBufMax = 64 << 10
)

// bufPool holds the byte buffers of streams: line buffers and output
// buffers. It stores pointers so that Put does not allocate.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, lineBufStart)
	return &b
}}

// getBuf returns an empty buffer from bufPool.
func getBuf() *[]byte {
	p := bufPool.Get().(*[]byte)
	*p = (*p)[:0]
	return p
}

// putBuf puts p, from getBuf, back into bufPool with buf, what its buffer
// became (it may have grown), unless buf is too large to keep.
func putBuf(p *[]byte, buf []byte) {
	if cap(buf) > pooledBufMax {
		return
	}
	*p = buf[:0]
	bufPool.Put(p)
}

// lineReader splits a body into lines exactly as the Ollama client's
// bufio.Scanner does (ScanLines, maximum token size clientLineLimit): its
// code follows bufio.Scanner.Scan step by step, with a buffer that starts
// at lineBufStart instead of at the maximum. Lines end at '\n', a trailing
// '\r' is dropped, empty lines are lines, and a last line without a
// newline is a line too, also after a read error. A line too long for the
// buffer ends the stream as a read error does: the client ignores both.
type lineReader struct {
	r          io.Reader
	p          *[]byte // from bufPool; buf is put back through it
	buf        []byte  // the whole buffer: len(buf) is its capacity
	start, end int     // the data not yet returned is buf[start:end]
	err        error   // sticky: io.EOF, a read error or bufio.ErrTooLong
}

func newLineReader(r io.Reader) *lineReader {
	p := getBuf()
	return &lineReader{r: r, p: p, buf: (*p)[:cap(*p)]}
}

// release returns the buffer to the pool; the last line returned is no
// longer valid.
func (l *lineReader) release() {
	if l.p != nil {
		putBuf(l.p, l.buf)
		l.p, l.buf = nil, nil
	}
}

// next returns the next line, valid until the next call, or false at the
// end of the stream.
func (l *lineReader) next() ([]byte, bool) {
	for {
		if l.end > l.start || l.err != nil {
			data := l.buf[l.start:l.end]
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				l.start += i + 1
				return dropCR(data[:i]), true
			}
			if l.err != nil {
				l.start, l.end = 0, 0
				if len(data) > 0 {
					return dropCR(data), true
				}
				return nil, false
			}
		}
		// Room to read more: move the data to the front when the buffer
		// is full or mostly consumed, grow it when it is full of one line.
		if l.start > 0 && (l.end == len(l.buf) || l.start > len(l.buf)/2) {
			copy(l.buf, l.buf[l.start:l.end])
			l.end -= l.start
			l.start = 0
		}
		if l.end == len(l.buf) {
			if len(l.buf) >= clientLineLimit {
				l.err = bufio.ErrTooLong
				return nil, false
			}
			nb := make([]byte, min(2*len(l.buf), clientLineLimit))
			copy(nb, l.buf[l.start:l.end])
			l.end -= l.start
			l.start = 0
			l.buf = nb
		}
		for empty := 0; ; {
			n, err := l.r.Read(l.buf[l.end:])
			if n < 0 || len(l.buf)-l.end < n {
				l.err = bufio.ErrBadReadCount
				break
			}
			l.end += n
			if err != nil {
				l.err = err
				break
			}
			if n > 0 {
				break
			}
			// bufio.Scanner's maxConsecutiveEmptyReads.
			if empty++; empty > 100 {
				l.err = io.ErrNoProgress
				break
			}
		}
	}
}

func dropCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// parseChunk is the fast path of a streamed line: it accepts only a content
// chunk of the chat API (generate false) or of the generate API, and only
// in a form it can read in one pass, without allocating, exactly as
// encoding/json would decode it into api.ChatResponse or
// api.GenerateResponse:
//
//	chat:     {"model":"m","created_at":"…","message":{"role":"assistant","content":"…","thinking":"…"},"done":false}
//	generate: {"model":"m","created_at":"…","response":"…","thinking":"…","done":false}
//
// Keys may come in any order and be left out, each at most once, spelled
// exactly so (encoding/json matches keys without regard to case); values
// are strings, or the literal false for done; created_at is a timestamp
// that time.Time.UnmarshalJSON reads on its first, strict, attempt; strings
// are valid UTF-8 with valid escapes and no unpaired surrogate. Anything
// else (a final chunk, an error, an unknown or repeated key, a null, a
// number, odd escapes) is refused, and the caller decodes the line as the
// Ollama client does. A refused line may be valid.
//
// When it accepts the line, parseChunk returns content with the chunk's
// content (chat) or response (generate) text appended, unescaped, and
// whether the chunk carried text: content or thinking. thinking, when not
// nil, gets the thinking text appended (for tests). When it refuses the
// line, the bytes of content past its length may have been overwritten.
func parseChunk(line []byte, generate bool, content []byte, thinking *[]byte) (out []byte, text, ok bool) {
	mark := len(content)
	out, text, ok = readChunk(line, generate, content, thinking)
	if !ok {
		return content[:mark], false, false
	}
	return out, text, true
}

func readChunk(line []byte, generate bool, content []byte, thinking *[]byte) (out []byte, text, ok bool) {
	i, more, ok := openObject(line, skipSpace(line, 0))
	if !ok {
		return content, false, false
	}
	for seen := keySet(0); more; {
		key, j, ok := readKey(line, i)
		if !ok {
			return content, false, false
		}
		var k keySet
		var t bool
		switch string(key) {
		case "model":
			k = keyModel
			j, ok = skipString(line, j)
		case "created_at":
			k = keyCreatedAt
			j, ok = readTime(line, j)
		case "done":
			k = keyDone
			j, ok = readFalse(line, j)
		case "message":
			k = keyMessage
			content, j, t, ok = readMessage(line, j, content, thinking)
			ok = ok && !generate
		case "response":
			k = keyResponse
			start := len(content)
			content, j, ok = scanString(line, j, content, true)
			t, ok = len(content) > start, ok && generate
		case "thinking":
			k = keyThinking
			j, t, ok = readThinking(line, j, thinking)
			ok = ok && generate
		}
		if k == 0 || !ok || seen&k != 0 {
			return content, false, false
		}
		seen |= k
		text = text || t
		if i, more, ok = nextMember(line, j); !ok {
			return content, false, false
		}
	}
	return content, text, skipSpace(line, i) == len(line)
}

// openObject reads the '{' of an object at line[i] and reports where its
// first member starts and whether it has one; an empty object ends after
// its '}'. ok is false when line[i] is not '{'.
func openObject(line []byte, i int) (next int, more, ok bool) {
	if i == len(line) || line[i] != '{' {
		return i, false, false
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return i + 1, false, true
	}
	return i, true, true
}

// keySet is a set of the keys parseChunk knows, to refuse repeated ones.
type keySet uint8

const (
	keyModel keySet = 1 << iota
	keyCreatedAt
	keyMessage
	keyResponse
	keyThinking
	keyDone
	keyRole
	keyContent
)

// readMessage reads the message object of a chat chunk at line[i]: role,
// content and thinking, all strings, each at most once.
func readMessage(line []byte, i int, content []byte, thinking *[]byte) (out []byte, next int, text, ok bool) {
	i, more, ok := openObject(line, i)
	if !ok {
		return content, i, false, false
	}
	for seen := keySet(0); more; {
		key, j, ok := readKey(line, i)
		if !ok {
			return content, i, false, false
		}
		var k keySet
		var t bool
		switch string(key) {
		case "role":
			k = keyRole
			j, ok = skipString(line, j)
		case "content":
			k = keyContent
			start := len(content)
			content, j, ok = scanString(line, j, content, true)
			t = len(content) > start
		case "thinking":
			k = keyThinking
			j, t, ok = readThinking(line, j, thinking)
		}
		if k == 0 || !ok || seen&k != 0 {
			return content, i, false, false
		}
		seen |= k
		text = text || t
		if i, more, ok = nextMember(line, j); !ok {
			return content, i, false, false
		}
	}
	return content, i, text, true
}

// readKey reads `"key"` and the colon after it at line[i], and returns the
// key and where its value starts. The key is the bytes up to the next
// quote: it is compared with the known keys, which have no escapes, so a
// key with an escape (or any other key) is refused by the caller.
func readKey(line []byte, i int) (key []byte, next int, ok bool) {
	if i == len(line) || line[i] != '"' {
		return nil, i, false
	}
	j := i + 1
	for j < len(line) && line[j] != '"' { // shorter than bytes.IndexByte's setup
		j++
	}
	if j == len(line) {
		return nil, i, false
	}
	key = line[i+1 : j]
	if j+1 < len(line) && line[j+1] == ':' {
		j += 2 // Ollama's own form: no space
	} else {
		j = skipSpace(line, j+1)
		if j == len(line) || line[j] != ':' {
			return nil, i, false
		}
		j++
	}
	return key, skipSpace(line, j), true
}

// nextMember reads what follows a value in an object: a comma and the
// space before the next key (more), or the closing brace.
func nextMember(line []byte, i int) (next int, more, ok bool) {
	i = skipSpace(line, i)
	if i == len(line) {
		return i, false, false
	}
	switch line[i] {
	case ',':
		return skipSpace(line, i+1), true, true
	case '}':
		return i + 1, false, true
	}
	return i, false, false
}

// skipSpace skips JSON white space.
func skipSpace(line []byte, i int) int {
	for i < len(line) && line[i] <= ' ' {
		switch line[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

func readFalse(line []byte, i int) (int, bool) {
	if bytes.HasPrefix(line[i:], []byte("false")) {
		return i + len("false"), true
	}
	return i, false
}

// readThinking reads a thinking string, and appends its text to thinking
// when it is not nil. It reports whether the text is not empty: every
// character and escape of a valid string stands for at least one byte.
func readThinking(line []byte, i int, thinking *[]byte) (next int, text, ok bool) {
	if thinking != nil {
		*thinking, next, ok = scanString(line, i, *thinking, true)
	} else {
		next, ok = skipString(line, i)
	}
	return next, ok && next-i > 2, ok
}

func skipString(line []byte, i int) (int, bool) {
	_, next, ok := scanString(line, i, nil, false)
	return next, ok
}

// plain marks the bytes a JSON string holds as they are: all but the quote,
// the backslash and the control characters. Bytes from 0x80 up must form
// valid UTF-8.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString reads the JSON string whose opening quote is at line[i] and,
// when keep is set, appends its text to dst. It refuses what encoding/json
// would not decode to the same bytes without error: invalid UTF-8 (which
// encoding/json replaces), unpaired surrogates (likewise), bad escapes and
// control characters (errors).
func scanString(line []byte, i int, dst []byte, keep bool) (out []byte, next int, ok bool) {
	if i == len(line) || line[i] != '"' {
		return dst, i, false
	}
	i++
	for {
		j := i
		var high byte
		for j < len(line) && plain[line[j]] {
			high |= line[j]
			j++
		}
		if j > i {
			if high >= utf8.RuneSelf && !utf8.Valid(line[i:j]) {
				return dst, i, false
			}
			if keep {
				dst = append(dst, line[i:j]...)
			}
			i = j
		}
		if i == len(line) {
			return dst, i, false
		}
		switch line[i] {
		case '"':
			return dst, i + 1, true
		case '\\':
			var r rune
			if r, i, ok = readEscape(line, i); !ok {
				return dst, i, false
			}
			if keep {
				if r < utf8.RuneSelf {
					dst = append(dst, byte(r))
				} else {
					dst = utf8.AppendRune(dst, r)
				}
			}
		default: // a control character
			return dst, i, false
		}
	}
}

// readEscape reads the escape at line[i] (its backslash): a character
// escape, or \uXXXX, or a surrogate pair of two.
func readEscape(line []byte, i int) (r rune, next int, ok bool) {
	if i+1 >= len(line) {
		return 0, i, false
	}
	switch c := line[i+1]; c {
	case '"', '\\', '/':
		return rune(c), i + 2, true
	case 'b':
		return '\b', i + 2, true
	case 'f':
		return '\f', i + 2, true
	case 'n':
		return '\n', i + 2, true
	case 'r':
		return '\r', i + 2, true
	case 't':
		return '\t', i + 2, true
	case 'u':
	default:
		return 0, i, false
	}
	r, ok = hex4(line, i+2)
	if !ok {
		return 0, i, false
	}
	if !utf16.IsSurrogate(r) {
		return r, i + 6, true
	}
	// A high surrogate, then a low one in a second escape.
	if r >= 0xDC00 || i+7 >= len(line) || line[i+6] != '\\' || line[i+7] != 'u' {
		return 0, i, false
	}
	lo, ok := hex4(line, i+8)
	if !ok || lo < 0xDC00 || lo > 0xDFFF {
		return 0, i, false
	}
	return utf16.DecodeRune(r, lo), i + 12, true
}

func hex4(line []byte, i int) (rune, bool) {
	if i+4 > len(line) {
		return 0, false
	}
	var r rune
	for _, c := range line[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// readTime reads a created_at string that time.Time.UnmarshalJSON reads
// without error. It accepts only what the standard library's strict RFC
// 3339 parser (its first attempt, which does not allocate) accepts:
// YYYY-MM-DDTHH:MM:SS, an optional fraction, then Z or ±HH:MM, every field
// in range. That parser sees the raw bytes between the quotes, escapes
// included, so a string with a backslash is refused too.
func readTime(line []byte, i int) (int, bool) {
	if i == len(line) || line[i] != '"' {
		return i, false
	}
	j := i + 1
	for j < len(line) && line[j] != '"' {
		j++
	}
	if j == len(line) || !validTime(line[i+1:j]) {
		return i, false
	}
	return j + 1, true
}

func validTime(s []byte) bool {
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return false
	}
	s = s[19:]
	if len(s) >= 2 && s[0] == '.' && isDigit(s[1]) {
		n := 2
		for n < len(s) && isDigit(s[n]) {
			n++
		}
		s = s[n:]
	}
	if len(s) == 1 && s[0] == 'Z' {
		return true
	}
	if len(s) != len("-07:00") || (s[0] != '+' && s[0] != '-') || s[3] != ':' {
		return false
	}
	zh, ok1 := digits(s[1:3])
	zm, ok2 := digits(s[4:6])
	return ok1 && ok2 && zh <= 23 && zm <= 59
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digits(s []byte) (int, bool) {
	n := 0
	for _, c := range s {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
