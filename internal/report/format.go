package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Unit says how a value is written.
type Unit int

// The units of the reports' values.
const (
	// Count: events, requests; whole numbers from 10 on.
	Count Unit = iota
	// Bytes, in IEC units (KiB, MiB, GiB).
	Bytes
	// Ratio, written as a percentage.
	Ratio
	// Seconds, written as ms, s, min or h.
	Seconds
	// Days, e.g. time left on a certificate.
	Days
	// PerSecond: a rate.
	PerSecond
	// Cores: CPU seconds per second.
	Cores
	// UpDown: 1 is "up", 0 is "DOWN".
	UpDown
	// Bool: 1 is "yes", 0 is "NO".
	Bool
)

// Format writes v in the unit.
func (u Unit) Format(v float64) string {
	if math.IsNaN(v) {
		return "NaN"
	}
	if math.IsInf(v, 0) {
		if v > 0 {
			return "+Inf"
		}
		return "-Inf"
	}
	switch u {
	case Bytes:
		return formatBytes(v)
	case Ratio:
		return trimFloat(v*100, 2) + " %"
	case Seconds:
		return formatSeconds(v)
	case Days:
		return trimFloat(v, 1) + " days"
	case PerSecond:
		if math.Abs(v) < 10 {
			return trimFloat(v, 2) + "/s"
		}
		return formatNumber(v) + "/s"
	case Cores:
		return trimFloat(v, 3) + " cores"
	case UpDown:
		switch v {
		case 1:
			return "up"
		case 0:
			return "DOWN"
		}
	case Bool:
		switch v {
		case 1:
			return "yes"
		case 0:
			return "NO"
		}
	}
	return formatNumber(v)
}

// formatNumber rounds to whole numbers from 1 on (increase() extrapolates,
// so counts are rarely whole) and groups thousands.
func formatNumber(v float64) string {
	if math.Abs(v) < 1 {
		return trimFloat(v, 2)
	}
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// trimFloat writes v with at most prec decimals, without trailing zeros.
func trimFloat(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

func formatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	a := math.Abs(v)
	i := 0
	for a >= 1024 && i < len(units)-1 {
		a /= 1024
		v /= 1024
		i++
	}
	if i == 0 {
		return trimFloat(v, 0) + " B"
	}
	return trimFloat(v, 2) + " " + units[i]
}

func formatSeconds(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0 s"
	case a < 1:
		return trimFloat(v*1000, 1) + " ms"
	case a < 120:
		return trimFloat(v, 2) + " s"
	case a < 2*3600:
		return trimFloat(v/60, 1) + " min"
	default:
		return trimFloat(v/3600, 1) + " h"
	}
}

// formatWindow writes a report window in days or hours.
func formatWindow(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		n := int(d / (24 * time.Hour))
		if n == 1 {
			return "24 hours"
		}
		return fmt.Sprintf("%d days", n)
	}
	return d.String()
}
