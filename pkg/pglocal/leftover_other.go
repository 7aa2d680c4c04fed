//go:build !linux

package pglocal

import (
	"context"
	"syscall"
)

func stopWithParent(*syscall.SysProcAttr) {}

// StopLeftover stops a server left running on the cluster in dir by a
// process that died without stopping it. Only Linux can tell such a server
// from another process; elsewhere it does nothing, and PostgreSQL itself
// refuses to start on a cluster whose server still runs.
func StopLeftover(ctx context.Context, dir string) (int, error) { return 0, nil }
