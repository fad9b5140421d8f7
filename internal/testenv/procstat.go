package testenv

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat is what this package reads from one /proc/PID/stat line.
type procStat struct {
	ppid int
	// cpu is the process's own user+system time; children is that of its
	// children that have exited and been waited for (cutime+cstime).
	cpu, children time.Duration
}

// parseProcStat reads a /proc/PID/stat line. The command name is in
// parentheses and may hold spaces and parentheses itself: the fields are
// counted from the last ')'.
func parseProcStat(raw []byte) (procStat, error) {
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc stat line without a command name: %.40q", raw)
	}
	// After the name: state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime …
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc stat line has %d fields after the command name, want 15 or more", len(f))
	}
	var n [5]int64
	for k, idx := range [...]int{1, 11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[idx], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("/proc stat field %d: %w", idx+3, err)
		}
		n[k] = v
	}
	return procStat{
		ppid:     int(n[0]),
		cpu:      time.Duration(n[1]+n[2]) * clockTick,
		children: time.Duration(n[3]+n[4]) * clockTick,
	}, nil
}

func readProcStat(pid int) (procStat, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseProcStat(raw)
	if err != nil {
		return procStat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return st, nil
}

// ProcessCPU is the user+system CPU time process pid has used, from
// /proc/PID/stat (in clock ticks of 10 ms).
func ProcessCPU(pid int) (time.Duration, error) {
	st, err := readProcStat(pid)
	return st.cpu, err
}

// TreeCPU is the CPU time of process pid and everything below it: the
// processes alive now and, through the waited-for children's times each
// parent keeps, those that have exited (a PostgreSQL backend of a closed
// connection counts in its postmaster's).
func TreeCPU(pid int) (time.Duration, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	total := st.cpu + st.children
	for _, child := range descendants(pid) {
		if cst, err := readProcStat(child); err == nil { // it may have exited since
			total += cst.cpu + cst.children
		}
	}
	return total, nil
}
