package testenv

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tail := " S 1 2 3 0 -1 4194560 10 20 0 0 %s 0 0 20 0 1 0 5 100 200"
	for _, tc := range []struct {
		name, line string
		want       procStat
		wantErr    string
	}{
		{"plain", "42 (postgres)" + strings.Replace(tail, "%s", "7 3 150 50", 1),
			procStat{ppid: 1, cpu: 100 * time.Millisecond, children: 2 * time.Second}, ""},
		{"name with spaces and parentheses", "42 (postgres: a (b) c)" + strings.Replace(tail, "%s", "1 0 0 0", 1),
			procStat{ppid: 1, cpu: 10 * time.Millisecond}, ""},
		{"no name", "42 postgres S 1", procStat{}, "without a command name"},
		{"truncated", "42 (postgres) S 1 2 3", procStat{}, "want 15 or more"},
		{"not a number", "42 (postgres)" + strings.Replace(tail, "%s", "x 0 0 0", 1), procStat{}, "field 14"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.line))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestProcessCPUOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	before, err := ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel has charged at least one more clock tick.
	deadline := time.Now().Add(time.Minute)
	for {
		now, err := ProcessCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if now > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v for a minute of spinning", before)
		}
		for i := 0; i < 1e6; i++ {
			_ = strings.Repeat("x", i%4)
		}
	}
	tree, err := TreeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if tree < before {
		t.Errorf("TreeCPU = %v, below the process's own %v", tree, before)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1) succeeded")
	}
}
