package authevents

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testAuthParser = authLineParser{eventKey: "event", ipKey: "ip_address", timestampKey: "timestamp"}

func TestParseAuthLine(t *testing.T) {
	tests := []struct {
		name               string
		line               string
		wantReason         string // empty: valid
		wantEvent, wantIP  string
		wantTS             string
		wantTSKind, ipKind jsonKind
	}{
		{
			name:      "contract line",
			line:      `{"timestamp":"2026-11-27T12:00:00.5Z","level":"warn","event":"authentication_failed","ip_address":"203.0.113.7","user_id":"u-42","action":"login","resource":"/api/login","risk_score":0.8}`,
			wantEvent: "authentication_failed", wantIP: "203.0.113.7", ipKind: kindString,
			wantTS: "2026-11-27T12:00:00.5Z", wantTSKind: kindString,
		},
		{
			name:      "whitespace, nested values and numeric timestamp",
			line:      " {\"meta\": {\"a\": [1, {\"event\": \"nested\"}], \"s\": \"}]\"} ,\r\n \"event\" : \"admin_action\", \"timestamp\": 1764244800.25, \"ok\": true, \"x\": null } \r",
			wantEvent: "admin_action", wantTS: "1764244800.25", wantTSKind: kindNumber,
		},
		{
			name:      "escaped values and key",
			line:      `{"ev\u0065nt":"authentication_\u0066ailed","ip_address":"198.51.100.\u0031","note":"say \"hi\"\\"}`,
			wantEvent: "authentication_failed", wantIP: "198.51.100.1", ipKind: kindString,
		},
		{
			name:      "duplicate key keeps the last",
			line:      `{"event":"a","event":"b"}`,
			wantEvent: "b",
		},
		{
			name:      "non-string ip is kept as its kind",
			line:      `{"event":"authentication_failed","ip_address":12}`,
			wantEvent: "authentication_failed", wantIP: "12", ipKind: kindNumber,
		},
		{name: "empty", line: ``, wantReason: invalidNotJSON},
		{name: "plain text", line: `fake logs`, wantReason: invalidNotJSON},
		{name: "array", line: `[{"event":"a"}]`, wantReason: invalidNotJSON},
		{name: "truncated", line: `{"event":"authentication_fai`, wantReason: invalidNotJSON},
		{name: "trailing garbage", line: `{"event":"a"} x`, wantReason: invalidNotJSON},
		{name: "trailing comma", line: `{"event":"a",}`, wantReason: invalidNotJSON},
		{name: "bad escape", line: `{"event":"a\q"}`, wantReason: invalidNotJSON},
		{name: "control character", line: "{\"event\":\"a\x01\"}", wantReason: invalidNotJSON},
		{name: "bad number", line: `{"event":"a","n":01}`, wantReason: invalidNotJSON},
		{name: "bad literal", line: `{"event":"a","n":tru}`, wantReason: invalidNotJSON},
		{name: "empty object", line: `{}`, wantReason: invalidMissingField},
		{name: "no event", line: `{"ip_address":"203.0.113.7"}`, wantReason: invalidMissingField},
		{name: "numeric event", line: `{"event":7}`, wantReason: invalidFieldType},
		{name: "null event", line: `{"event":null}`, wantReason: invalidFieldType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f authLineFields
			err := testAuthParser.parse([]byte(tt.line), &f)
			if tt.wantReason != "" {
				if err == nil || reasonOf(err) != tt.wantReason {
					t.Fatalf("parse() error = %v, want reason %s", err, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse() error = %v", err)
			}
			if got := string(f.event.val); got != tt.wantEvent {
				t.Errorf("event = %q, want %q", got, tt.wantEvent)
			}
			if f.ipAddress.kind != tt.ipKind || string(f.ipAddress.val) != tt.wantIP {
				t.Errorf("ip_address = %v %q, want %v %q", f.ipAddress.kind, f.ipAddress.val, tt.ipKind, tt.wantIP)
			}
			if f.timestamp.kind != tt.wantTSKind || string(f.timestamp.val) != tt.wantTS {
				t.Errorf("timestamp = %v %q, want %v %q", f.timestamp.kind, f.timestamp.val, tt.wantTSKind, tt.wantTS)
			}
		})
	}
}

func TestAuthSourceAggregation(t *testing.T) {
	tests := []struct {
		ip     string
		v4, v6 int
		want   string
		wantOK bool
	}{
		{ip: "203.0.113.7", want: "203.0.113.7", wantOK: true},
		{ip: "203.0.113.7", v4: 24, want: "203.0.113.0", wantOK: true},
		{ip: "::ffff:203.0.113.7", v4: 24, want: "203.0.113.0", wantOK: true},
		{ip: "2001:db8:1:2:3:4:5:6", v6: 64, want: "2001:db8:1:2::", wantOK: true},
		{ip: "fe80::1%eth0", want: "fe80::1", wantOK: true},
		{ip: "not-an-ip"},
		{ip: ""},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			got, ok := authSource(authField{kind: kindString, val: []byte(tt.ip)}, tt.v4, tt.v6)
			if ok != tt.wantOK || (ok && got != netip.MustParseAddr(tt.want)) {
				t.Fatalf("authSource(%q) = %v, %v; want %s, %v", tt.ip, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestAuthTimestamp(t *testing.T) {
	want := time.Date(2026, 11, 27, 12, 0, 0, 500_000_000, time.UTC)
	tests := []struct {
		name   string
		f      authField
		wantOK bool
	}{
		{"rfc3339", authField{kindString, []byte("2026-11-27T12:00:00.5Z")}, true},
		{"offset", authField{kindString, []byte("2026-11-27T13:00:00.5+01:00")}, true},
		{"seconds", authField{kindNumber, []byte("1795780800.5")}, true},
		{"milliseconds", authField{kindNumber, []byte("1795780800500")}, true},
		{"garbage", authField{kindString, []byte("yesterday")}, false},
		{"negative", authField{kindNumber, []byte("-1")}, false},
		{"huge", authField{kindNumber, []byte("1e300")}, false},
		{"absent", authField{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := authTimestamp(tt.f)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if ok && !got.Equal(want) {
				t.Fatalf("time = %v, want %v", got, want)
			}
		})
	}
}

// FuzzParseAuthLine checks that the scanner never panics and that, on every
// valid JSON object, it extracts exactly what encoding/json decodes.
func FuzzParseAuthLine(f *testing.F) {
	for _, s := range []string{
		`{"timestamp":"2026-11-27T12:00:00Z","level":"info","event":"authentication_success","ip_address":"10.1.2.3","user_id":"u1","action":"login","resource":"/login","risk_score":0.1}`,
		`{"event":"a\u00e9\ud83d\ude00","ip_address":"::1","timestamp":1.5e9}`,
		`{"event":["x"],"nested":{"event":"y"}}`,
		`{"event":"\xff\xfe","ip_address":"a\"b"}`,
		`{"ev\u0065nt":"x","event":"y"}`,
		`not json`, `{`, `{"event":`, `{}`, ` [] `, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var got authLineFields
		err := testAuthParser.parse(line, &got)
		if err != nil && reasonOf(err) == "" {
			t.Fatalf("error without a reason: %v", err)
		}
		trimmed := bytes.TrimLeft(line, " \t\r\n")
		if !json.Valid(line) || len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			// Valid JSON that encoding/json cannot hold (e.g. 1e400).
			if errors.Is(err, errAuthNotJSON) {
				t.Fatalf("valid JSON rejected as not_json: %q", line)
			}
			return
		}
		check := func(name string, field authField) {
			v, present := m[name]
			switch v := v.(type) {
			case string:
				if field.kind != kindString || string(field.val) != v {
					t.Fatalf("%s = %v %q, encoding/json has %q (line %q)", name, field.kind, field.val, v, line)
				}
			case float64:
				if field.kind != kindNumber {
					t.Fatalf("%s kind = %v, encoding/json has number %v (line %q)", name, field.kind, v, line)
				}
				var n float64
				if json.Unmarshal(field.val, &n) != nil || n != v {
					t.Fatalf("%s = %q, encoding/json has %v (line %q)", name, field.val, v, line)
				}
			default:
				if present && field.kind != kindOther {
					t.Fatalf("%s kind = %v, encoding/json has %T (line %q)", name, field.kind, v, line)
				}
				if !present && field.kind != kindAbsent {
					t.Fatalf("%s kind = %v, absent for encoding/json (line %q)", name, field.kind, line)
				}
			}
		}
		if err == nil || errors.Is(err, errAuthMissingField) || errors.Is(err, errAuthFieldType) {
			check("event", got.event)
			check("ip_address", got.ipAddress)
			check("timestamp", got.timestamp)
		} else {
			t.Fatalf("valid JSON object rejected: %v (line %q)", err, line)
		}
		_, isString := m["event"].(string)
		if isString != (err == nil) {
			t.Fatalf("event string = %v but err = %v (line %q)", isString, err, line)
		}
	})
}

// reasonOf returns the reason label for a parse error.
func reasonOf(err error) string {
	var le *authLineError
	if errors.As(err, &le) {
		return le.Reason
	}
	return invalidNotJSON
}

// TestShortDecimalMatchesParseFloat compares the fast path of risk scores
// with strconv.ParseFloat on edge cases and random decimals.
func TestShortDecimalMatchesParseFloat(t *testing.T) {
	inputs := []string{"0", "-0", "1", "0.1", "0.35", "-2.5", "100", "0.000000000000001", "123456789012345",
		"99999999999999.9", "0.30000000000000004", "1e3", "1.5E-2", "1234567890123456", ".5", "5.", "-", ""}
	rng := rand.New(rand.NewPCG(8, 9))
	for range 10_000 {
		inputs = append(inputs, strconv.FormatFloat(rng.Float64()*math.Pow(10, float64(rng.IntN(12))), 'f', rng.IntN(10), 64))
	}
	for _, in := range inputs {
		got, ok := shortDecimal([]byte(in))
		want, err := strconv.ParseFloat(in, 64)
		if ok && (err != nil || math.Float64bits(got) != math.Float64bits(want)) {
			t.Errorf("shortDecimal(%q) = %v, ParseFloat = %v %v", in, got, want, err)
		}
		if !ok && err == nil && len(strings.TrimLeft(strings.ReplaceAll(in, ".", ""), "-")) < 15 && !strings.ContainsAny(in, "eE") {
			t.Errorf("shortDecimal(%q) declined a short decimal", in)
		}
	}
}
