//go:build e2e

package e2e

import "syscall"

// dieWithSuite makes a helper process (Prometheus, the Pushgateway) die with
// the suite, should the suite be killed before its cleanup runs.
func dieWithSuite() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
