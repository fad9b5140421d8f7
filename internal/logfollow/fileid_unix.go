//go:build unix

package logfollow

import (
	"os"
	"syscall"
)

// fileID identifies a file whatever its name: device and inode.
type fileID struct{ dev, ino uint64 }

func identity(_ string, info os.FileInfo) fileID {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}
}
