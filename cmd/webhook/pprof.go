//go:build benchpprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiles, on PPROF_ADDR, in benchmark builds only
	"os"
)

// A benchmark build (go build -tags benchpprof, as hack/bench -profile does)
// serves Go's profiles on PPROF_ADDR. Release builds have no such listener.
func init() {
	if addr := os.Getenv("PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
