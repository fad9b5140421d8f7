package authevents

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// The auth collector reads hundreds of thousands of log lines a second, so
// instead of decoding each line into a map it scans the top-level object once
// and keeps only the few fields it needs, as slices of the line. Escaped or
// non-UTF-8 strings (rare in practice) are decoded by encoding/json so that
// the result always matches what encoding/json would produce.

// Reasons for an invalid line, the values of the reason label of
// warden_auth_log_lines_invalid_total.
const (
	invalidNotJSON      = "not_json"
	invalidMissingField = "missing_field"
	invalidFieldType    = "invalid_field"
	invalidTooLong      = "too_long"
)

var authInvalidReasons = [...]string{invalidNotJSON, invalidMissingField, invalidFieldType, invalidTooLong}

// authLineError is a line the parser rejects; Reason is one of the
// invalid* constants.
type authLineError struct{ Reason string }

func (e *authLineError) Error() string { return "invalid auth log line: " + e.Reason }

var (
	errAuthNotJSON      = &authLineError{invalidNotJSON}
	errAuthMissingField = &authLineError{invalidMissingField}
	errAuthFieldType    = &authLineError{invalidFieldType}
)

// jsonKind is the JSON type of a field value as seen by the scanner.
type jsonKind uint8

const (
	kindAbsent jsonKind = iota
	kindString
	kindNumber
	kindOther // object, array, true, false, null
)

// authField is one extracted top-level field. For a string, val is its
// decoded content; for a number, its literal text.
type authField struct {
	kind jsonKind
	val  []byte
}

// authLineFields are the fields of one line the collector uses. The slices
// alias the line (or a fresh decoded copy) and are valid until the line's
// buffer is reused.
type authLineFields struct {
	event     authField
	ipAddress authField
	timestamp authField
	userID    authField
	riskScore authField
}

// authLineParser extracts the configured field names from JSON log lines.
type authLineParser struct {
	eventKey, ipKey, timestampKey, userKey, riskKey string
}

// parse scans line, a single JSON object, into f. It returns an
// *authLineError when the line is not a JSON object or lacks a string event
// field. It never panics, whatever the input.
func (p *authLineParser) parse(line []byte, f *authLineFields) error {
	*f = authLineFields{}
	n := len(line)
	i := skipJSONSpace(line, 0)
	if i >= n || line[i] != '{' {
		return errAuthNotJSON
	}
	i = skipJSONSpace(line, i+1)
	if i < n && line[i] == '}' {
		i++
	} else {
		for {
			if i >= n || line[i] != '"' {
				return errAuthNotJSON
			}
			keyEnd, keyEsc, ok := scanJSONString(line, i)
			if !ok {
				return errAuthNotJSON
			}
			target := p.fieldFor(line[i:keyEnd], keyEsc, f)
			i = skipJSONSpace(line, keyEnd)
			if i >= n || line[i] != ':' {
				return errAuthNotJSON
			}
			i = skipJSONSpace(line, i+1)
			if i >= n {
				return errAuthNotJSON
			}
			start := i
			kind := kindOther
			switch c := line[i]; {
			case c == '"':
				end, esc, ok := scanJSONString(line, i)
				if !ok {
					return errAuthNotJSON
				}
				i, kind = end, kindString
				if target != nil {
					target.val = jsonStringValue(line[start:end], esc)
				}
			case c == '-' || (c >= '0' && c <= '9'):
				end, ok := scanJSONNumber(line, i)
				if !ok {
					return errAuthNotJSON
				}
				i, kind = end, kindNumber
				if target != nil {
					target.val = line[start:end]
				}
			default:
				end, ok := skipJSONValue(line, i)
				if !ok {
					return errAuthNotJSON
				}
				i = end
				if target != nil {
					target.val = nil
				}
			}
			if target != nil {
				target.kind = kind
			}
			i = skipJSONSpace(line, i)
			if i >= n {
				return errAuthNotJSON
			}
			if line[i] == '}' {
				i++
				break
			}
			if line[i] != ',' {
				return errAuthNotJSON
			}
			i = skipJSONSpace(line, i+1)
		}
	}
	if skipJSONSpace(line, i) != n {
		return errAuthNotJSON
	}
	switch f.event.kind {
	case kindAbsent:
		return errAuthMissingField
	case kindString:
		return nil
	default:
		return errAuthFieldType
	}
}

// fieldFor returns the field a key (quoted, as in the line) fills, or nil.
func (p *authLineParser) fieldFor(quoted []byte, escaped bool, f *authLineFields) *authField {
	key := quoted[1 : len(quoted)-1]
	if escaped {
		key = jsonStringValue(quoted, true)
	}
	switch string(key) {
	case p.eventKey:
		return &f.event
	case p.ipKey:
		return &f.ipAddress
	case p.timestampKey:
		return &f.timestamp
	case p.userKey:
		return &f.userID
	case p.riskKey:
		return &f.riskScore
	}
	return nil
}

// jsonStringValue returns the content of a quoted JSON string already
// checked by scanJSONString.
func jsonStringValue(quoted []byte, escaped bool) []byte {
	raw := quoted[1 : len(quoted)-1]
	if !escaped { // plain ASCII, as scanJSONString found it
		return raw
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		// Unreachable for strings scanJSONString accepted; keep the raw
		// bytes rather than fail the line.
		return raw
	}
	return []byte(s)
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanJSONString checks the string starting at b[i] == '"' and returns the
// index just past its closing quote and whether it needs decoding (escapes
// or bytes outside ASCII).
func scanJSONString(b []byte, i int) (end int, needsDecode bool, ok bool) {
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, needsDecode, true
		case c == '\\':
			needsDecode = true
			if j+1 >= len(b) {
				return 0, false, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					return 0, false, false
				}
				for _, h := range b[j+2 : j+6] {
					if !isHex(h) {
						return 0, false, false
					}
				}
				j += 6
			default:
				return 0, false, false
			}
		case c < 0x20:
			return 0, false, false
		case c >= utf8.RuneSelf:
			needsDecode = true
			j++
		default:
			j++
		}
	}
	return 0, false, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanJSONNumber checks a number per the JSON grammar and returns the index
// just past it.
func scanJSONNumber(b []byte, i int) (int, bool) {
	n := len(b)
	if i < n && b[i] == '-' {
		i++
	}
	switch {
	case i < n && b[i] == '0':
		i++
	case i < n && b[i] >= '1' && b[i] <= '9':
		for i < n && isDigit(b[i]) {
			i++
		}
	default:
		return 0, false
	}
	if i < n && b[i] == '.' {
		i++
		if i >= n || !isDigit(b[i]) {
			return 0, false
		}
		for i < n && isDigit(b[i]) {
			i++
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= n || !isDigit(b[i]) {
			return 0, false
		}
		for i < n && isDigit(b[i]) {
			i++
		}
	}
	return i, true
}

// skipJSONValue skips a value the collector does not look at: a literal,
// or an object or array, matched by bracket depth (strings inside are
// scanned so that brackets in them do not count). Nested content is not
// validated further: accepting a few malformed lines costs nothing, and the
// fields the collector uses are checked exactly.
func skipJSONValue(b []byte, i int) (int, bool) {
	n := len(b)
	switch b[i] {
	case 't':
		return skipLiteral(b, i, "true")
	case 'f':
		return skipLiteral(b, i, "false")
	case 'n':
		return skipLiteral(b, i, "null")
	case '{', '[':
	default:
		return 0, false
	}
	depth := 0
	for i < n {
		switch c := b[i]; c {
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			i++
			if depth == 0 {
				return i, true
			}
		case '"':
			end, _, ok := scanJSONString(b, i)
			if !ok {
				return 0, false
			}
			i = end
		default:
			i++
		}
	}
	return 0, false
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// authSource returns the address a failed login came from, aggregated to
// the configured prefix lengths (0 keeps the address). ok is false when the
// field is missing or not an IP address.
func authSource(f authField, ipv4Bits, ipv6Bits int) (netip.Addr, bool) {
	if f.kind != kindString {
		return netip.Addr{}, false
	}
	// ParseAddr's error keeps its input, so string(f.val) would be copied to
	// the heap on every line. The unsafe view is only read during the
	// call: the Addr keeps no reference to it (a zone is interned as a
	// copy, and dropped below), and the error is discarded.
	addr, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(f.val), len(f.val)))
	if err != nil {
		return netip.Addr{}, false
	}
	addr = addr.Unmap().WithZone("")
	bits := ipv6Bits
	if addr.Is4() {
		bits = ipv4Bits
	}
	if bits > 0 && bits < addr.BitLen() {
		if p, err := addr.Prefix(bits); err == nil {
			addr = p.Addr()
		}
	}
	return addr, true
}

// authTimestamp reads the event time from an RFC 3339 string or a number of
// Unix seconds (milliseconds when larger than 1e12). ok is false when the
// field is missing or unreadable.
func authTimestamp(f authField) (time.Time, bool) {
	switch f.kind {
	case kindString:
		t, err := time.Parse(time.RFC3339Nano, string(f.val))
		return t, err == nil
	case kindNumber:
		v, err := strconv.ParseFloat(string(f.val), 64)
		if err != nil || math.IsInf(v, 0) || v < 0 {
			return time.Time{}, false
		}
		if v > 1e12 {
			v /= 1000
		}
		if v > 1e11 { // beyond year 5000: not a timestamp
			return time.Time{}, false
		}
		sec, frac := math.Modf(v)
		return time.Unix(int64(sec), int64(frac*1e9)), true
	}
	return time.Time{}, false
}

// authRiskScore reads a risk score: a finite JSON number. ok is false when
// the field is missing or not a number.
func authRiskScore(f authField) (float64, bool) {
	if f.kind != kindNumber {
		return 0, false
	}
	if v, ok := shortDecimal(f.val); ok {
		return v, true
	}
	v, err := strconv.ParseFloat(string(f.val), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// pow10 holds the powers of ten a float64 represents exactly.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// shortDecimal reads a JSON number without exponent and with at most 15
// digits, such as a risk score "0.35", exactly as strconv.ParseFloat does
// but several times faster: the digits and the power of ten are exact
// float64 values, so the one division rounds correctly (Clinger's fast
// path). ok is false for any other number.
func shortDecimal(b []byte) (float64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	var mant uint64
	digits, frac := 0, -1
	for _, c := range b {
		switch {
		case isDigit(c):
			mant = mant*10 + uint64(c-'0')
			digits++
			if frac >= 0 {
				frac++
			}
		case c == '.' && frac < 0:
			frac = 0
		default:
			return 0, false
		}
	}
	if digits == 0 || digits >= len(pow10) {
		return 0, false
	}
	v := float64(mant)
	if frac > 0 {
		v /= pow10[frac]
	}
	if neg {
		v = -v
	}
	return v, true
}
