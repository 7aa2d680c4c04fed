//go:build e2e && !linux

package e2e

import "syscall"

// dieWithSuite: only Linux has a parent-death signal; elsewhere the cleanup
// stops the helper processes.
func dieWithSuite() *syscall.SysProcAttr { return nil }
