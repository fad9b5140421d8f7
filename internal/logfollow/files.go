// Package logfollow follows log files and Kubernetes pod logs line by line,
// surviving rotation, truncation, restarts and reconnects, and hands each
// line to a Sink. It bounds line length itself and tells the sink about the
// lines it drops.
package logfollow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Sink receives the lines of followed logs. A line slice is valid only
// during the call.
type Sink interface {
	// Line is one line, without its newline; empty lines are skipped.
	Line(b []byte)
	// TooLong reports a line dropped because it exceeded the maximum
	// length.
	TooLong()
}

// Splitter cuts a byte stream into lines (without the newline) of at
// most max bytes. An over-long line is dropped whole and reported once.
// Empty lines are skipped.
type Splitter struct {
	max        int
	partial    []byte
	discarding bool // inside an over-long line, until its newline
}

// NewSplitter returns a splitter for lines of at most maxBytes bytes.
func NewSplitter(maxBytes int) *Splitter { return &Splitter{max: maxBytes} }

// Write passes the whole lines in data to sink and keeps the rest for the
// next call.
func (s *Splitter) Write(data []byte, sink Sink) {
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			if s.discarding {
				return
			}
			if len(s.partial)+len(data) > s.max {
				s.partial = s.partial[:0]
				s.discarding = true
				sink.TooLong()
				return
			}
			s.partial = append(s.partial, data...)
			return
		}
		chunk := data[:nl]
		data = data[nl+1:]
		switch {
		case s.discarding:
			s.discarding = false
		case len(s.partial) > 0:
			if len(s.partial)+len(chunk) > s.max {
				sink.TooLong()
			} else {
				s.partial = append(s.partial, chunk...)
				sink.Line(s.partial)
			}
			s.partial = s.partial[:0]
		case len(chunk) > s.max:
			sink.TooLong()
		case len(chunk) > 0:
			sink.Line(chunk)
		}
	}
}

// flush emits an unterminated last line, at the end of a stream.
func (s *Splitter) flush(sink Sink) {
	if len(s.partial) > 0 && !s.discarding {
		sink.Line(s.partial)
	}
	s.reset()
}

// reset forgets any partial line.
func (s *Splitter) reset() {
	s.partial = s.partial[:0]
	s.discarding = false
}

// FileOptions configure a Files follower.
type FileOptions struct {
	Globs         []string
	FromBeginning bool
	MaxLineBytes  int
	PollInterval  time.Duration
	// missingGrace is how long a followed path may be missing (rotated
	// away, not yet recreated) before its old file is closed.
	MissingGrace time.Duration
}

// followedFile is one open log file.
type followedFile struct {
	path         string
	f            *os.File
	info         os.FileInfo // identity of the open file
	offset       int64
	split        Splitter
	missingSince time.Time
}

// retiredFile remembers a file that was rotated away (renamed) so that,
// if the glob also matches its new name, it continues where it stopped
// instead of being read again from the start.
type retiredFile struct {
	info   os.FileInfo
	offset int64
	at     time.Time
}

// Files follows every file matching a set of globs, by polling:
// it survives rename rotation (the old file is read to its end, then the new
// file from its start) and truncation (copytruncate: reading restarts at the
// start when a file shrinks below the read offset). Lines appended and
// truncated within one poll interval by copytruncate cannot be seen; use
// rename rotation where possible.
type Files struct {
	opts    FileOptions
	sink    Sink
	logger  *slog.Logger
	files   map[string]*followedFile
	retired []retiredFile
	buf     []byte
}

// NewFiles returns a follower of the files matching opts.Globs; Run starts
// it.
func NewFiles(opts FileOptions, sink Sink, logger *slog.Logger) *Files {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.MissingGrace <= 0 {
		opts.MissingGrace = 30 * time.Second
	}
	return &Files{opts: opts, sink: sink, logger: logger, files: map[string]*followedFile{}, buf: make([]byte, 64<<10)}
}

// Run follows the files until ctx ends, then closes them.
func (w *Files) Run(ctx context.Context) {
	defer w.closeAll()
	w.poll(true)
	t := time.NewTicker(w.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.poll(false)
		}
	}
}

func (w *Files) closeAll() {
	for _, ff := range w.files {
		_ = ff.f.Close()
	}
	clear(w.files)
}

// poll discovers new files and reads what was appended to each.
func (w *Files) poll(initial bool) {
	now := time.Now()
	w.retired = slices.DeleteFunc(w.retired, func(r retiredFile) bool { return now.Sub(r.at) > w.opts.MissingGrace })
	for _, g := range w.opts.Globs {
		matches, err := filepath.Glob(g)
		if err != nil { // only ErrBadPattern, rejected by validation
			continue
		}
		for _, path := range matches {
			if _, ok := w.files[path]; !ok {
				w.open(path, initial && !w.opts.FromBeginning)
			}
		}
	}
	for path, ff := range w.files {
		if !w.follow(ff, now) {
			delete(w.files, path)
		}
	}
}

// open starts following path, at its end or its start. A file already
// followed under another name (a glob matching both the live and the
// rotated name) is left to that follower.
func (w *Files) open(path string, atEnd bool) {
	f, err := os.Open(path)
	if err != nil {
		w.logger.Warn("cannot open log file", "path", path, "err", err)
		return
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		_ = f.Close()
		return
	}
	for _, other := range w.files {
		if os.SameFile(other.info, info) {
			_ = f.Close()
			return
		}
	}
	ff := &followedFile{path: path, f: f, info: info, split: Splitter{max: w.opts.MaxLineBytes}}
	for i, r := range w.retired {
		if os.SameFile(r.info, info) {
			ff.offset = r.offset
			w.retired = slices.Delete(w.retired, i, i+1)
			atEnd = false
			break
		}
	}
	if atEnd {
		ff.offset = info.Size()
		// Starting inside a line: drop its remainder.
		if ff.offset > 0 {
			var last [1]byte
			if _, err := f.ReadAt(last[:], ff.offset-1); err == nil && last[0] != '\n' {
				ff.split.discarding = true
			}
		}
	}
	if _, err := f.Seek(ff.offset, io.SeekStart); err != nil {
		_ = f.Close()
		return
	}
	w.files[path] = ff
	w.logger.Debug("following log file", "path", path, "offset", ff.offset)
}

// follow reads what was appended to ff and handles truncation and rotation.
// It returns false when ff is closed.
func (w *Files) follow(ff *followedFile, now time.Time) bool {
	w.drain(ff)
	cur, err := os.Stat(ff.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ff.missingSince.IsZero() {
			ff.missingSince = now
		}
		if now.Sub(ff.missingSince) < w.opts.MissingGrace {
			return true
		}
		w.retire(ff, now)
		return false
	case err != nil:
		w.logger.Warn("cannot stat log file", "path", ff.path, "err", err)
		return true
	case !os.SameFile(cur, ff.info):
		// Rotated: the old file has been read to its end; continue with the
		// file now at the path, from its start.
		w.retire(ff, now)
		nf, err := os.Open(ff.path)
		if err != nil {
			return false
		}
		info, err := nf.Stat()
		if err != nil {
			_ = nf.Close()
			return false
		}
		w.logger.Debug("log file rotated", "path", ff.path)
		*ff = followedFile{path: ff.path, f: nf, info: info, split: Splitter{max: w.opts.MaxLineBytes, partial: ff.split.partial[:0]}}
		w.drain(ff)
		return true
	}
	ff.missingSince = time.Time{}
	if info, err := ff.f.Stat(); err == nil && info.Size() < ff.offset {
		w.logger.Debug("log file truncated", "path", ff.path, "size", info.Size(), "offset", ff.offset)
		if _, err := ff.f.Seek(0, io.SeekStart); err != nil {
			return true
		}
		ff.offset = 0
		ff.split.reset()
		w.drain(ff)
	}
	return true
}

// retire closes a file that left its path, flushing its last line.
func (w *Files) retire(ff *followedFile, now time.Time) {
	ff.split.flush(w.sink)
	_ = ff.f.Close()
	w.retired = append(w.retired, retiredFile{info: ff.info, offset: ff.offset, at: now})
	if len(w.retired) > 64 {
		w.retired = w.retired[1:]
	}
}

// drain reads ff to its current end.
func (w *Files) drain(ff *followedFile) {
	for {
		n, err := ff.f.Read(w.buf)
		if n > 0 {
			ff.offset += int64(n)
			ff.split.Write(w.buf[:n], w.sink)
		}
		if err != nil || n == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				w.logger.Warn("cannot read log file", "path", ff.path, "err", err)
			}
			return
		}
	}
}
