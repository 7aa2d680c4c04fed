package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/creditgate/creditgate/hack/tools/internal/oci"
)

// repoRoot is the service's repository, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "webhook")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// TestImage builds the real image from cmd/webhook and cmd/reconciler, reads
// the tarball back as `ctr image import` would, and runs both entrypoints
// as the image holds them.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	const (
		tag     = "creditgate:test"
		version = "v0.0.0-imagetest"
	)
	dir := t.TempDir()
	out := filepath.Join(dir, "creditgate.tar")
	var stdout, stderr bytes.Buffer
	args := []string{"-repo", repoRoot(t), "-tag", tag, "-out", out, "-version", version}
	if err := run(context.Background(), args, noenv, &stdout, &stderr); err != nil {
		t.Fatalf("run %q: %v\n%s", args, err, stderr.String())
	}

	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &ref)
	if err != nil {
		t.Fatalf("read back %s: %v", out, err)
	}

	t.Run("config", func(t *testing.T) {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("platform = %s/%s, want linux/amd64", cf.OS, cf.Architecture)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("User = %q, want 65532:65532", c.User)
		}
		if diff := cmp.Diff([]string{"/usr/local/bin/webhook"}, c.Entrypoint); diff != "" {
			t.Errorf("Entrypoint (-want +got):\n%s", diff)
		}
		if c.WorkingDir != "/" {
			t.Errorf("WorkingDir = %q, want /", c.WorkingDir)
		}
		if len(c.Cmd) != 0 {
			t.Errorf("Cmd = %q, want none", c.Cmd)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  defaultSource,
		} {
			if got := c.Labels[k]; got != want {
				t.Errorf("label %s = %q, want %q", k, got, want)
			}
		}
	})

	t.Run("files", func(t *testing.T) {
		hdrs, contents := layerFiles(t, img)
		for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"} {
			if _, ok := hdrs[sh]; ok {
				t.Errorf("image has %s; it must have no shell", sh)
			}
		}
		for p, h := range hdrs {
			owner := 0
			if p == "home/nonroot/" {
				owner = 65532
			}
			if h.Uid != owner || h.Gid != owner {
				t.Errorf("%s owned by %d:%d, want %d:%d", p, h.Uid, h.Gid, owner, owner)
			}
			if h.Mode&0o6000 != 0 {
				t.Errorf("%s has setuid/setgid bits: %o", p, h.Mode)
			}
			if h.Mode&0o002 != 0 && p != "tmp/" {
				t.Errorf("%s is world-writable: %o", p, h.Mode)
			}
		}
		wantMode := map[string]int64{
			"usr/local/bin/webhook":             0o755,
			"usr/local/bin/reconciler":          0o755,
			"etc/passwd":                        0o644,
			"etc/group":                         0o644,
			"etc/ssl/certs/ca-certificates.crt": 0o644,
			"tmp/":                              0o1777,
		}
		for p, mode := range wantMode {
			h, ok := hdrs[p]
			if !ok {
				if p == "etc/ssl/certs/ca-certificates.crt" {
					if _, err := os.Stat(defaultCA); errors.Is(err, os.ErrNotExist) {
						continue // the build host has no CA bundle to copy
					}
				}
				t.Errorf("image lacks %s", p)
				continue
			}
			if h.Mode != mode {
				t.Errorf("%s mode = %o, want %o", p, h.Mode, mode)
			}
		}
		if !strings.Contains(contents["etc/passwd"], "nonroot:x:65532:65532:") {
			t.Errorf("/etc/passwd has no nonroot 65532 entry:\n%s", contents["etc/passwd"])
		}
		if !strings.Contains(contents["etc/group"], "nonroot:x:65532:") {
			t.Errorf("/etc/group has no nonroot 65532 entry:\n%s", contents["etc/group"])
		}
	})

	t.Run("entrypoints run", func(t *testing.T) {
		// The binaries as the image holds them, run from a directory of their own.
		root := t.TempDir()
		_, contents := layerFiles(t, img)
		for _, bin := range []string{"webhook", "reconciler"} {
			if err := os.WriteFile(filepath.Join(root, bin), []byte(contents["usr/local/bin/"+bin]), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name string
			bin  string
			args []string
			want string
		}{
			{"webhook --help", "webhook", []string{"--help"}, "webhook migrate"},
			{"webhook version", "webhook", []string{"version"}, version},
			{"reconciler --help", "reconciler", []string{"--help"}, "Usage: reconciler"},
			{"reconciler --version", "reconciler", []string{"--version"}, version},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cmd := exec.Command(filepath.Join(root, tt.bin), tt.args...)
				cmd.Dir = root
				cmd.Env = []string{} // as bare as the container's
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v (want exit 0)\n%s", tt.name, err, out)
				}
				if !strings.Contains(string(out), tt.want) {
					t.Errorf("%s printed %q, want it to contain %q", tt.name, out, tt.want)
				}
			})
		}
	})
}

// TestToolImage builds the local cluster's sandbox image and checks it is one
// binary (hack/tools/pause tests the binary itself).
func TestToolImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the pause binary")
	}
	out := filepath.Join(t.TempDir(), "pause.tar")
	var stdout, stderr bytes.Buffer
	args := []string{"-tool", "pause", "-repo", repoRoot(t), "-out", out}
	if err := run(context.Background(), args, noenv, &stdout, &stderr); err != nil {
		t.Fatalf("run %q: %v\n%s", args, err, stderr.String())
	}
	img, err := oci.ReadTarball(out, defaultPauseTag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/pause"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("Entrypoint (-want +got):\n%s", diff)
	}
	hdrs, _ := layerFiles(t, img)
	if diff := cmp.Diff([]string{"pause"}, keys(hdrs)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestTagValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tag    string
		wantOK bool
	}{
		{"creditgate:dev", true},
		{"creditgate.local/pause:3.10", true},
		{"localhost:5000/creditgate:v1", true},
		{"creditgate:latest", false},
		{"creditgate", false},
		{"localhost:5000/creditgate", false},
	}
	for _, tt := range tests {
		t.Run(tt.tag, func(t *testing.T) {
			t.Parallel()
			o := options{repo: repoRoot(t), tag: tt.tag, version: "v1", out: "x.tar"}
			err := o.fill(context.Background(), noenv)
			if (err == nil) != tt.wantOK {
				t.Errorf("fill with -tag %q: err = %v, want ok = %v", tt.tag, err, tt.wantOK)
			}
		})
	}
}

func noenv(string) string { return "" }

// layerFiles reads every layer's tar headers and files' contents, keyed by
// path without the leading slash; directories end in "/".
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	hdrs := map[string]*tar.Header{}
	contents := map[string]string{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			hdrs[h.Name] = h
			if h.Typeflag == tar.TypeReg {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				contents[h.Name] = string(b)
			}
		}
		rc.Close()
	}
	return hdrs, contents
}

func keys(m map[string]*tar.Header) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
