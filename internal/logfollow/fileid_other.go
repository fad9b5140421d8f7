//go:build !unix

package logfollow

import "os"

// fileID identifies a file; without inodes, by its name, so a rotated file
// matched under its new name is read again.
type fileID struct{ path string }

func identity(path string, _ os.FileInfo) fileID { return fileID{path: path} }
