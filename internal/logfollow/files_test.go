package logfollow

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingSink keeps every line it receives, and "too_long" for each
// line dropped.
type recordingSink struct {
	mu      sync.Mutex
	lines   []string
	reasons []string
}

func (r *recordingSink) Line(b []byte) {
	r.mu.Lock()
	r.lines = append(r.lines, string(b))
	r.mu.Unlock()
}

func (r *recordingSink) TooLong() {
	r.mu.Lock()
	r.reasons = append(r.reasons, "too_long")
	r.mu.Unlock()
}

func (r *recordingSink) take() (lines, reasons []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines, reasons = r.lines, r.reasons
	r.lines, r.reasons = nil, nil
	return lines, reasons
}

func TestLineSplitter(t *testing.T) {
	tests := []struct {
		name        string
		chunks      []string
		max         int
		wantLines   []string
		wantReasons []string
	}{
		{"whole lines", []string{"a\nbb\n"}, 10, []string{"a", "bb"}, nil},
		{"split across writes", []string{"ab", "c\nd", "e\n"}, 10, []string{"abc", "de"}, nil},
		{"empty lines skipped", []string{"\n\na\n\n"}, 10, []string{"a"}, nil},
		{"too long in one write", []string{"0123456789AB\nok\n"}, 10, []string{"ok"}, []string{"too_long"}},
		{"too long across writes", []string{"012345", "6789AB", "CDEF", "\nok\n"}, 10, []string{"ok"}, []string{"too_long"}},
		{"partial then too long", []string{"01234", "56789A\nok\n"}, 10, []string{"ok"}, []string{"too_long"}},
		{"exactly max", []string{"0123456789\n"}, 10, []string{"0123456789"}, nil},
		{"unterminated flushed", []string{"a\nb"}, 10, []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sink recordingSink
			s := Splitter{max: tt.max}
			for _, c := range tt.chunks {
				s.Write([]byte(c), &sink)
			}
			s.flush(&sink)
			lines, reasons := sink.take()
			if !slices.Equal(lines, tt.wantLines) || !slices.Equal(reasons, tt.wantReasons) {
				t.Fatalf("lines %q reasons %q, want %q %q", lines, reasons, tt.wantLines, tt.wantReasons)
			}
		})
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func expectLines(t *testing.T, sink *recordingSink, want ...string) {
	t.Helper()
	lines, reasons := sink.take()
	if len(reasons) != 0 {
		t.Fatalf("unexpected dropped lines %q", reasons)
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("lines = %q, want %q", lines, want)
	}
}

func newTestFollower(sink Sink, fromBeginning bool, globs ...string) *Files {
	return NewFiles(FileOptions{Globs: globs, FromBeginning: fromBeginning, MaxLineBytes: 100}, sink, slog.New(slog.DiscardHandler))
}

func TestFileFollowerStartsAtEndUnlessFromBeginning(t *testing.T) {
	for _, fromBeginning := range []bool{false, true} {
		t.Run(map[bool]string{false: "end", true: "beginning"}[fromBeginning], func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "auth.log")
			appendFile(t, path, "old1\nold2\npart")
			var sink recordingSink
			w := newTestFollower(&sink, fromBeginning, filepath.Join(dir, "*.log"))
			defer w.closeAll()
			w.poll(true)
			if fromBeginning {
				expectLines(t, &sink, "old1", "old2")
			} else {
				expectLines(t, &sink)
			}
			appendFile(t, path, "ial\nnew\n")
			w.poll(false)
			if fromBeginning {
				expectLines(t, &sink, "partial", "new")
			} else {
				expectLines(t, &sink, "new")
			}
		})
	}
}

func TestFileFollowerSurvivesRenameRotation(t *testing.T) {
	for _, glob := range []string{"auth.log", "auth.log*"} {
		t.Run(glob, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "auth.log")
			appendFile(t, path, "")
			var sink recordingSink
			w := newTestFollower(&sink, false, filepath.Join(dir, glob))
			defer w.closeAll()
			w.poll(true)

			appendFile(t, path, "a1\na2\n")
			w.poll(false)
			expectLines(t, &sink, "a1", "a2")

			// The writer appends to the old file after the rename and before
			// reopening; those lines must not be lost.
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path+".1", "a3\n")
			w.poll(false) // path missing: old file drained, kept open
			expectLines(t, &sink, "a3")
			appendFile(t, path+".1", "a4\n")
			appendFile(t, path, "b1\nb2\n")
			w.poll(false)
			expectLines(t, &sink, "a4", "b1", "b2")
			w.poll(false) // a glob matching auth.log.1 must not re-read it
			expectLines(t, &sink)

			appendFile(t, path, "b3\n")
			w.poll(false)
			expectLines(t, &sink, "b3")
		})
	}
}

func TestFileFollowerSurvivesTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	appendFile(t, path, "")
	var sink recordingSink
	w := newTestFollower(&sink, false, path)
	defer w.closeAll()
	w.poll(true)
	appendFile(t, path, "line-1\nline-2\nline-3\n")
	w.poll(false)
	expectLines(t, &sink, "line-1", "line-2", "line-3")

	// copytruncate: the content is copied away and the file cut to zero,
	// then the writer continues at the start.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "new-1\n")
	w.poll(false)
	expectLines(t, &sink, "new-1")
	appendFile(t, path, "new-2\n")
	w.poll(false)
	expectLines(t, &sink, "new-2")
}

func TestFileFollowerNewFilesAndDeletedFiles(t *testing.T) {
	dir := t.TempDir()
	var sink recordingSink
	w := newTestFollower(&sink, false, filepath.Join(dir, "*.log"))
	w.opts.MissingGrace = 1 // close a missing file at the next poll
	defer w.closeAll()
	w.poll(true)
	// A file created after start is read from its start.
	appendFile(t, filepath.Join(dir, "a.log"), "x1\n")
	w.poll(false)
	expectLines(t, &sink, "x1")
	if err := os.Remove(filepath.Join(dir, "a.log")); err != nil {
		t.Fatal(err)
	}
	w.poll(false)
	w.poll(false)
	if len(w.order) != 0 {
		t.Fatalf("deleted file still followed: %v", w.order)
	}
	// Over-long lines are reported, not fatal.
	appendFile(t, filepath.Join(dir, "b.log"), strings.Repeat("x", 150)+"\nok\n")
	w.poll(false)
	lines, reasons := sink.take()
	if !slices.Equal(lines, []string{"ok"}) || !slices.Equal(reasons, []string{"too_long"}) {
		t.Fatalf("lines %q reasons %q", lines, reasons)
	}
}

// rotateNumbered rotates path the way logrotate does with numbered files
// and "rotate keep": the oldest is removed, path.N becomes path.N+1, and
// path becomes path.1. The caller creates the new path.
func rotateNumbered(t testing.TB, path string, keep int) {
	t.Helper()
	if err := os.Remove(fmt.Sprintf("%s.%d", path, keep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for n := keep - 1; n >= 1; n-- {
		err := os.Rename(fmt.Sprintf("%s.%d", path, n), fmt.Sprintf("%s.%d", path, n+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
}

// TestFileFollowerReadsNumberedRotationsOnce: with a glob that matches the
// rotated names too, every rotation renames files the glob already
// matched; each file is followed by identity wherever its name moves and
// read once.
func TestFileFollowerReadsNumberedRotationsOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	appendFile(t, path, "")
	var sink recordingSink
	w := newTestFollower(&sink, false, path+"*")
	defer w.closeAll()
	w.poll(true)

	var want []string
	for r := range 6 {
		for i := range 3 {
			line := fmt.Sprintf("r%d-%d", r, i)
			appendFile(t, path, line+"\n")
			want = append(want, line)
		}
		w.poll(false)
		rotateNumbered(t, path, 4)
		// Written to the renamed file before the writer reopens.
		late := fmt.Sprintf("r%d-late", r)
		appendFile(t, path+".1", late+"\n")
		want = append(want, late)
		w.poll(false)
		appendFile(t, path, "")
		w.poll(false)
	}
	for range 3 {
		w.poll(false)
	}
	expectLines(t, &sink, want...)
}

// TestFileFollowerWarnsWhenAGlobMatchesNothing: a glob that matches no file
// for NoMatchWarning is logged once, and Matched counts each glob's files.
func TestFileFollowerWarnsWhenAGlobMatchesNothing(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	var sink recordingSink
	w := NewFiles(FileOptions{
		Globs:          []string{filepath.Join(dir, "auth.log*"), filepath.Join(dir, "other/*.log")},
		MaxLineBytes:   100,
		NoMatchWarning: time.Nanosecond,
	}, &sink, slog.New(slog.NewTextHandler(&logs, nil)))
	defer w.closeAll()
	appendFile(t, filepath.Join(dir, "auth.log"), "")
	appendFile(t, filepath.Join(dir, "auth.log.1"), "")
	for range 3 {
		w.poll(false)
	}
	if got := w.Matched(); !slices.Equal(got, []int{2, 0}) {
		t.Fatalf("Matched() = %v, want [2 0]", got)
	}
	if n := strings.Count(logs.String(), "log file glob matches no file"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "other/*.log") || strings.Contains(logs.String(), "auth.log*") {
		t.Fatalf("warning names the wrong glob:\n%s", logs.String())
	}
}
