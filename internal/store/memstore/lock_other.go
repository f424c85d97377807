//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package memstore

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir only opens the lock file where flock is unavailable: sharing a
// data directory between stores is then not detected.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}
