// Package oci assembles small container images from files in memory and
// writes them as docker-archive tarballs, with no container engine and no
// registry: the tarballs load with `ctr -n k8s.io image import`, `kind load
// image-archive` and `docker load`.
package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of a layer. Parent directories that are not listed are
// added as root-owned 0755 directories.
type File struct {
	Path string // absolute path inside the image, e.g. /usr/local/bin/webhook
	Mode int64  // permission bits, e.g. 0o755
	UID  int
	GID  int
	Dir  bool   // a directory; Data is ignored
	Data []byte // the file's contents
}

// Spec describes an image: its layers, bottom first, and its runtime config.
type Spec struct {
	Layers       [][]File
	Config       v1.Config
	OS           string    // default "linux"
	Architecture string    // default "amd64"
	Created      time.Time // image creation time and every file's mtime; zero means the Unix epoch
}

// Build assembles the image a Spec describes.
func Build(s Spec) (v1.Image, error) {
	created := s.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	img := empty.Image
	for i, files := range s.Layers {
		l, err := Layer(files, created)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer: l,
			History: v1.History{
				Created:   v1.Time{Time: created},
				CreatedBy: "creditgate hack/tools/internal/oci",
				Comment:   fmt.Sprintf("layer %d: %d entries", i, len(files)),
			},
		})
		if err != nil {
			return nil, fmt.Errorf("append layer %d: %w", i, err)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = orDefault(s.OS, "linux")
	cf.Architecture = orDefault(s.Architecture, "amd64")
	cf.Created = v1.Time{Time: created}
	cf.Config = s.Config
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// Layer packs files into one uncompressed tar layer (gzip-compressed when
// written). Entries are sorted and carry a fixed mtime, so the same files give
// the same digest.
func Layer(files []File, mtime time.Time) (v1.Layer, error) {
	entries := map[string]File{}
	for _, f := range files {
		p, err := clean(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("%s listed twice", p)
		}
		f.Path = p
		entries[p] = f
	}
	for _, f := range files {
		p := path.Clean(f.Path)
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if e, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Mode: 0o755, Dir: true}
			} else if !e.Dir {
				return nil, fmt.Errorf("%s is a file and the parent of %s", d, p)
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    f.Mode,
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if f.Dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", p, err)
		}
		if f.Dir {
			continue
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressedCaching)
}

// WriteTarball writes img as a docker-archive tarball (what `docker save`
// writes) tagged tag, e.g. "creditgate:dev".
func WriteTarball(file, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("parse tag %q: %w", tag, err)
	}
	if err := tarball.WriteToFile(file, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// ReadTarball reads the image tagged tag from a docker-archive tarball; an
// empty tag means the tarball's only image.
func ReadTarball(file, tag string) (v1.Image, error) {
	var ref *name.Tag
	if tag != "" {
		t, err := name.NewTag(tag)
		if err != nil {
			return nil, fmt.Errorf("parse tag %q: %w", tag, err)
		}
		ref = &t
	}
	img, err := tarball.ImageFromPath(file, ref)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return img, nil
}

func clean(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("path %q names the root", p)
	}
	return c, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
