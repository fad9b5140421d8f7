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
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
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
	// MissingGrace is how long a followed file may be matched by no glob
	// (rotated to a name no glob matches, or deleted) before it is closed;
	// what is appended to it meanwhile is still read.
	MissingGrace time.Duration
	// NoMatchWarning is how long a glob may match no file before a warning
	// is logged.
	NoMatchWarning time.Duration
}

// followedFile is one open log file, known by its identity (device and
// inode) whatever name it has.
type followedFile struct {
	id     fileID
	path   string // the name a glob last matched it under
	f      *os.File
	offset int64
	split  Splitter
	// unmatchedSince is when no glob matched the file any more; zero while
	// one does.
	unmatchedSince time.Time
}

// globState is what the follower knows of one glob's matches.
type globState struct {
	matched     atomic.Int64
	noneSince   time.Time
	warnedEmpty bool
}

// Files follows every file matching a set of globs, by polling. A file is
// known by its device and inode, not its name: each poll expands the globs,
// and a known file is read on under whatever matching name it now has, so
// a glob that matches the rotated names too (auth.log*) never reads a
// rotated file again. A file that no glob matches any more (rotated out of
// the globs, or deleted) is read to its end and closed after
// MissingGrace. Truncation (copytruncate) restarts reading at the start
// when a file shrinks below the read offset; lines appended and truncated
// within one poll interval cannot be seen, so use rename rotation where
// possible.
type Files struct {
	opts   FileOptions
	sink   Sink
	logger *slog.Logger
	// order holds the open files in the order they were found, so that
	// the rest of a rotated file is read before its successor.
	order []*followedFile
	globs []globState
	buf   []byte
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
	if opts.NoMatchWarning <= 0 {
		opts.NoMatchWarning = 5 * time.Minute
	}
	return &Files{
		opts:   opts,
		sink:   sink,
		logger: logger,
		globs:  make([]globState, len(opts.Globs)),
		buf:    make([]byte, 64<<10),
	}
}

// Matched returns, for each glob in the order of FileOptions.Globs, how
// many files it matched at the last poll. It is safe to call while Run
// runs.
func (w *Files) Matched() []int {
	n := make([]int, len(w.globs))
	for i := range w.globs {
		n[i] = int(w.globs[i].matched.Load())
	}
	return n
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
	for _, ff := range w.order {
		_ = ff.f.Close()
	}
	w.order = nil
}

// candidate is a file a glob matches that is not followed yet.
type candidate struct {
	path string
	info os.FileInfo
}

// poll expands the globs, starts following new files, reads what was
// appended to every open file and closes those no glob has matched for
// MissingGrace.
func (w *Files) poll(initial bool) {
	now := time.Now()
	matched := map[fileID]candidate{}
	for i, g := range w.opts.Globs {
		paths, err := filepath.Glob(g)
		if err != nil { // only ErrBadPattern, rejected by validation
			continue
		}
		n := 0
		for _, path := range paths {
			info, err := os.Stat(path)
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			n++
			id := identity(path, info)
			if _, ok := matched[id]; !ok {
				matched[id] = candidate{path: path, info: info}
			}
		}
		w.noteMatches(i, n, now)
	}
	for _, ff := range w.order {
		if c, ok := matched[ff.id]; ok {
			if ff.path != c.path {
				w.logger.Debug("log file renamed", "path", ff.path, "new_path", c.path)
				ff.path = c.path
			}
			ff.unmatchedSince = time.Time{}
			delete(matched, ff.id)
		} else if ff.unmatchedSince.IsZero() {
			ff.unmatchedSince = now
		}
	}
	// New files, oldest first, so that at start with FromBeginning the
	// rotated files are read before the live one.
	fresh := make([]fileID, 0, len(matched))
	for id := range matched {
		fresh = append(fresh, id)
	}
	slices.SortFunc(fresh, func(a, b fileID) int {
		return matched[a].info.ModTime().Compare(matched[b].info.ModTime())
	})
	for _, id := range fresh {
		w.open(id, matched[id].path, initial && !w.opts.FromBeginning)
	}
	w.order = slices.DeleteFunc(w.order, func(ff *followedFile) bool {
		w.follow(ff)
		if ff.unmatchedSince.IsZero() || now.Sub(ff.unmatchedSince) < w.opts.MissingGrace {
			return false
		}
		w.logger.Debug("log file no longer matched, closed", "path", ff.path)
		ff.split.flush(w.sink)
		_ = ff.f.Close()
		return true
	})
}

// noteMatches records how many files glob i matched and warns once when it
// has matched none for NoMatchWarning.
func (w *Files) noteMatches(i, n int, now time.Time) {
	g := &w.globs[i]
	g.matched.Store(int64(n))
	switch {
	case n > 0:
		if g.warnedEmpty {
			w.logger.Info("log file glob matches files again", "glob", w.opts.Globs[i], "files", n)
		}
		g.noneSince, g.warnedEmpty = time.Time{}, false
	case g.noneSince.IsZero():
		g.noneSince = now
	case !g.warnedEmpty && now.Sub(g.noneSince) >= w.opts.NoMatchWarning:
		w.logger.Warn("log file glob matches no file", "glob", w.opts.Globs[i], "for_seconds", now.Sub(g.noneSince).Round(time.Second).Seconds())
		g.warnedEmpty = true
	}
}

// open starts following the file id found at path, at its end or its
// start.
func (w *Files) open(id fileID, path string, atEnd bool) {
	f, err := os.Open(path)
	if err != nil {
		w.logger.Warn("cannot open log file", "path", path, "err", err)
		return
	}
	info, err := f.Stat()
	if err != nil || identity(path, info) != id {
		// Renamed between the glob and the open: the next poll finds it
		// under its new name.
		_ = f.Close()
		return
	}
	ff := &followedFile{id: id, path: path, f: f, split: Splitter{max: w.opts.MaxLineBytes}}
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
	w.order = append(w.order, ff)
	w.logger.Debug("following log file", "path", path, "offset", ff.offset)
}

// follow reads what was appended to ff, starting again at the start when
// it was truncated.
func (w *Files) follow(ff *followedFile) {
	if info, err := ff.f.Stat(); err == nil && info.Size() < ff.offset {
		w.logger.Debug("log file truncated", "path", ff.path, "size", info.Size(), "offset", ff.offset)
		if _, err := ff.f.Seek(0, io.SeekStart); err != nil {
			return
		}
		ff.offset = 0
		ff.split.reset()
	}
	w.drain(ff)
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
