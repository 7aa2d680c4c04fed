package oci

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func TestLayer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   []File
		want    []string // "path mode uid" per entry, in order
		wantErr string
	}{
		{
			name:  "parents added",
			files: []File{{Path: "/usr/local/bin/app", Mode: 0o755, Data: []byte("x")}},
			want:  []string{"usr/ 755 0", "usr/local/ 755 0", "usr/local/bin/ 755 0", "usr/local/bin/app 755 0"},
		},
		{
			name: "listed directory wins over its implied twin",
			files: []File{
				{Path: "/home/nonroot/.keep", Mode: 0o644},
				{Path: "/home/nonroot", Mode: 0o700, Dir: true, UID: 65532},
			},
			want: []string{"home/ 755 0", "home/nonroot/ 700 65532", "home/nonroot/.keep 644 0"},
		},
		{
			name:    "relative path",
			files:   []File{{Path: "etc/passwd"}},
			wantErr: "not absolute",
		},
		{
			name:    "duplicate",
			files:   []File{{Path: "/a"}, {Path: "/a/"}},
			wantErr: "listed twice",
		},
		{
			name:    "file as parent",
			files:   []File{{Path: "/a"}, {Path: "/a/b"}},
			wantErr: "is a file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := Layer(tt.files, time.Unix(0, 0))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Layer: err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var got []string
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				got = append(got, strings.Join([]string{h.Name, strconv.FormatInt(h.Mode, 8), strconv.Itoa(h.Uid)}, " "))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	spec := Spec{
		Layers: [][]File{
			{{Path: "/etc/motd", Mode: 0o644, Data: []byte("old")}, {Path: "/tmp", Mode: 0o1777, Dir: true}},
			{{Path: "/etc/motd", Mode: 0o644, Data: []byte("new")}, {Path: "/bin/app", Mode: 0o755, Data: []byte("#!")}},
		},
		Config: v1.Config{Entrypoint: []string{"/bin/app"}, User: "1:1"},
	}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteTarball(file, "example.local/app:v1", img); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTarball(file, "example.local/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := back.Digest()
	if d1 != d2 {
		t.Errorf("digest after round trip = %s, want %s", d2, d1)
	}
	again, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := again.Digest(); d3 != d1 {
		t.Errorf("rebuilt digest = %s, want %s (builds must be reproducible)", d3, d1)
	}

	// The flattened filesystem, as a container sees it: the upper layer wins.
	files := map[string]*tar.Header{}
	var motd bytes.Buffer
	tr := tar.NewReader(mutate.Extract(back))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "etc/motd" {
			_, _ = io.Copy(&motd, tr)
		}
	}
	if motd.String() != "new" {
		t.Errorf("/etc/motd = %q, want the upper layer's %q", motd.String(), "new")
	}
	for p, want := range map[string]int64{"bin/app": 0o755, "tmp": 0o1777} {
		if h, ok := files[p]; !ok || h.Mode != want {
			t.Errorf("%s: %v, want mode %o", p, h, want)
		}
	}
}
