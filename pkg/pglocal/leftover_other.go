//go:build !linux

package pglocal

import (
	"context"
	"syscall"
)

func stopWithParent(*syscall.SysProcAttr, syscall.Signal) {}

// StopLeftover needs /proc to tell a server left running from another
// process; elsewhere it does nothing, and PostgreSQL itself refuses to start
// on a cluster whose server still runs.
func StopLeftover(ctx context.Context, dir string) (int, error) { return 0, nil }
