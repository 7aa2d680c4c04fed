package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Extract writes the image's flattened filesystem (whiteouts applied) under
// dir, which must exist. File modes are kept; ownership is not, so an
// unprivileged caller can extract and run what is inside. Entries that would
// land outside dir are an error.
func Extract(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	root, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", dir, err)
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract ends the tar stream before it reports a failure
			// (such as an unsafe path) on the pipe: read to the real end.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return fmt.Errorf("read image filesystem: %w", err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read image filesystem: %w", err)
		}
		target, err := within(root, h.Name)
		if err != nil {
			return err
		}
		mode := h.FileInfo().Mode() & (os.ModePerm | os.ModeSticky | os.ModeSetuid | os.ModeSetgid)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("mkdir %s: %w", h.Name, err)
			}
			if err := os.Chmod(target, mode); err != nil {
				return fmt.Errorf("chmod %s: %w", h.Name, err)
			}
		case tar.TypeReg:
			if err := writeFile(target, tr, mode); err != nil {
				return fmt.Errorf("extract %s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("mkdir for %s: %w", h.Name, err)
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return fmt.Errorf("symlink %s: %w", h.Name, err)
			}
		case tar.TypeLink:
			src, err := within(root, h.Linkname)
			if err != nil {
				return err
			}
			if err := os.Link(src, target); err != nil {
				return fmt.Errorf("hard link %s: %w", h.Name, err)
			}
		default:
			// Device nodes and FIFOs need privileges and are never in our images.
			return fmt.Errorf("%s: unsupported tar entry type %q", h.Name, h.Typeflag)
		}
	}
}

func within(root, name string) (string, error) {
	target := filepath.Join(root, filepath.FromSlash(name))
	if target != root && !strings.HasPrefix(target, root+string(filepath.Separator)) {
		return "", fmt.Errorf("entry %q escapes the extraction directory", name)
	}
	return target, nil
}

func writeFile(target string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(target, mode) // the umask may have narrowed OpenFile's mode
}
