// Command image builds creditgate's container image with neither a container
// engine nor a registry: it cross-builds cmd/webhook and cmd/reconciler as
// static Linux binaries and packs them, with a nonroot user and the build
// host's CA bundle, into one image written as a docker-archive tarball
// (loadable by `ctr -n k8s.io image import`, `kind load image-archive` and
// `docker load`). See docs/image.md.
//
//	go run ./image [-tag creditgate:dev] [-out FILE] [-version V]
//	go run ./image -tool pause               # hack/tools/pause as creditgate.local/pause:3.10
//	go run ./image -tool echo                # hack/tools/echo as creditgate.local/echo:dev
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/creditgate/creditgate/hack/tools/internal/oci"
)

// Defaults shared with hack/cluster (lib.sh) and the chart.
const (
	defaultTag      = "creditgate:dev"
	defaultPauseTag = "creditgate.local/pause:3.10" // containerd's sandbox_image in hack/cluster
	toolRegistry    = "creditgate.local"
	defaultSource   = "https://github.com/creditgate/creditgate"
	defaultCA       = "/etc/ssl/certs/ca-certificates.crt"
	binDir          = "/usr/local/bin"
	nonroot         = 65532
)

var validTool = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

type options struct {
	repo    string
	tag     string
	out     string
	version string
	source  string
	ca      string
	arch    string
	tool    string
	created time.Time // from SOURCE_DATE_EPOCH
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var o options
	fl := flag.NewFlagSet("image", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.repo, "repo", "", "repository root holding cmd/ (default: git's top level of the working directory)")
	fl.StringVar(&o.tag, "tag", "", `image tag (default "`+defaultTag+`"; with -tool NAME "`+toolRegistry+`/NAME:dev", for pause "`+defaultPauseTag+`"); not "latest": kubelet would always pull it`)
	fl.StringVar(&o.out, "out", "", "tarball to write (default $CREDITGATE_CACHE/images/creditgate.tar, with -tool NAME …/NAME.tar; CREDITGATE_CACHE defaults to ~/.cache/creditgate)")
	fl.StringVar(&o.version, "version", "", "version stamped into the binaries and the image label (default: git describe --always --dirty, else dev)")
	fl.StringVar(&o.source, "source", defaultSource, "org.opencontainers.image.source label")
	fl.StringVar(&o.ca, "ca", defaultCA, "CA bundle copied to "+defaultCA+` in the image; "" for none`)
	fl.StringVar(&o.arch, "arch", "amd64", "GOARCH of the binaries and the image")
	fl.StringVar(&o.tool, "tool", "", "build hack/tools/NAME (pause, echo) into a one-binary image instead")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}

	if err := o.fill(ctx, getenv); err != nil {
		return err
	}
	start := time.Now()
	work, err := os.MkdirTemp("", "creditgate-image-")
	if err != nil {
		return fmt.Errorf("make build directory: %w", err)
	}
	defer os.RemoveAll(work)

	var spec oci.Spec
	if o.tool != "" {
		spec, err = toolSpec(ctx, o, work, stderr)
	} else {
		spec, err = creditgateSpec(ctx, o, work, stderr)
	}
	if err != nil {
		return err
	}
	img, err := oci.Build(spec)
	if err != nil {
		return fmt.Errorf("assemble image: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return fmt.Errorf("make output directory: %w", err)
	}
	if err := oci.WriteTarball(o.out, o.tag, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	st, err := os.Stat(o.out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image %s (%s, version %s): %s, %.1f MB, in %s\n",
		o.tag, digest, o.version, o.out, float64(st.Size())/1e6, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// fill resolves the defaults that depend on the environment.
func (o *options) fill(ctx context.Context, getenv func(string) string) error {
	if o.repo == "" {
		top, err := output(ctx, "", "git", "rev-parse", "--show-toplevel")
		if err != nil {
			return fmt.Errorf("find the repository root (pass -repo): %w", err)
		}
		o.repo = top
	}
	if _, err := os.Stat(filepath.Join(o.repo, "cmd", "webhook")); err != nil {
		return fmt.Errorf("-repo %s: no cmd/webhook: %w", o.repo, err)
	}
	if o.version == "" {
		o.version = "dev"
		if v, err := output(ctx, o.repo, "git", "describe", "--tags", "--always", "--dirty"); err == nil && v != "" {
			o.version = v
		}
	}
	// SOURCE_DATE_EPOCH dates the image and its files (reproducible builds);
	// without it they are dated at the Unix epoch, as ko does, so rebuilding
	// the same binaries gives the same digest.
	o.created = time.Unix(0, 0)
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: not a number of seconds: %w", s, err)
		}
		o.created = time.Unix(sec, 0)
	}
	if o.tag == "" {
		switch o.tool {
		case "":
			o.tag = defaultTag
		case "pause":
			o.tag = defaultPauseTag
		default:
			o.tag = toolRegistry + "/" + o.tool + ":dev"
		}
	}
	if strings.HasSuffix(o.tag, ":latest") || !strings.Contains(o.tag[strings.LastIndex(o.tag, "/")+1:], ":") {
		return fmt.Errorf("-tag %q: use an explicit tag other than latest (kubelet always pulls :latest, and there is no registry)", o.tag)
	}
	if o.out == "" {
		cache := getenv("CREDITGATE_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return fmt.Errorf("find the cache directory (pass -out): %w", err)
			}
			cache = filepath.Join(home, ".cache", "creditgate")
		}
		o.out = filepath.Join(cache, "images", "creditgate.tar")
		if o.tool != "" {
			o.out = filepath.Join(cache, "images", o.tool+".tar")
		}
	}
	return nil
}

// creditgateSpec builds both binaries and describes the service image:
// a base layer (users, CA bundle, /tmp) under an application layer.
func creditgateSpec(ctx context.Context, o options, work string, stderr io.Writer) (oci.Spec, error) {
	ldflags := "-s -w -X main.version=" + o.version
	if err := goBuild(ctx, o.repo, o.arch, ldflags, work, stderr, "./cmd/webhook", "./cmd/reconciler"); err != nil {
		return oci.Spec{}, err
	}
	var app []oci.File
	for _, name := range []string{"webhook", "reconciler"} {
		b, err := os.ReadFile(filepath.Join(work, name))
		if err != nil {
			return oci.Spec{}, fmt.Errorf("read built %s: %w", name, err)
		}
		app = append(app, oci.File{Path: binDir + "/" + name, Mode: 0o755, Data: b})
	}

	base := []oci.File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot))},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(
			"root:x:0:\n" + fmt.Sprintf("nonroot:x:%d:\n", nonroot))},
		// Go's resolver reads it to order /etc/hosts before DNS, as glibc would.
		{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Path: "/home/nonroot", Mode: 0o700, Dir: true, UID: nonroot, GID: nonroot},
		{Path: "/root", Mode: 0o700, Dir: true},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if o.ca != "" {
		b, err := os.ReadFile(o.ca)
		switch {
		case errors.Is(err, fs.ErrNotExist) && o.ca == defaultCA:
			fmt.Fprintf(stderr, "image: warning: %s not found; the image has no CA bundle and HTTPS calls (Clerk) will fail\n", o.ca)
		case err != nil:
			return oci.Spec{}, fmt.Errorf("read CA bundle: %w", err)
		default:
			base = append(base, oci.File{Path: defaultCA, Mode: 0o644, Data: b})
			env = append(env, "SSL_CERT_FILE="+defaultCA)
		}
	}

	return oci.Spec{
		Layers:       [][]oci.File{base, app},
		Architecture: o.arch,
		Created:      o.created,
		Config: v1.Config{
			Entrypoint:   []string{binDir + "/webhook"},
			User:         fmt.Sprintf("%d:%d", nonroot, nonroot),
			WorkingDir:   "/",
			Env:          env,
			ExposedPorts: map[string]struct{}{"8080/tcp": {}, "9090/tcp": {}},
			Labels: map[string]string{
				"org.opencontainers.image.source":      o.source,
				"org.opencontainers.image.version":     o.version,
				"org.opencontainers.image.title":       "creditgate",
				"org.opencontainers.image.description": "creditgate webhook (entrypoint) and reconciler (/usr/local/bin/reconciler)",
			},
		},
	}, nil
}

// toolSpec builds hack/tools/NAME into a one-file image, /NAME, run as nonroot.
func toolSpec(ctx context.Context, o options, work string, stderr io.Writer) (oci.Spec, error) {
	if !validTool.MatchString(o.tool) {
		return oci.Spec{}, fmt.Errorf("-tool %q: want a directory name under hack/tools", o.tool)
	}
	tools := filepath.Join(o.repo, "hack", "tools")
	if err := goBuild(ctx, tools, o.arch, "-s -w", work, stderr, "./"+o.tool); err != nil {
		return oci.Spec{}, err
	}
	b, err := os.ReadFile(filepath.Join(work, o.tool))
	if err != nil {
		return oci.Spec{}, fmt.Errorf("read built %s: %w", o.tool, err)
	}
	return oci.Spec{
		Layers:       [][]oci.File{{{Path: "/" + o.tool, Mode: 0o755, Data: b}}},
		Architecture: o.arch,
		Created:      o.created,
		Config: v1.Config{
			Entrypoint: []string{"/" + o.tool},
			User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
			WorkingDir: "/",
			Labels:     map[string]string{"org.opencontainers.image.source": o.source},
		},
	}, nil
}

// goBuild cross-builds pkgs, from dir, as static Linux binaries into out.
func goBuild(ctx context.Context, dir, arch, ldflags, out string, stderr io.Writer, pkgs ...string) error {
	args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", out + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s in %s: %w", strings.Join(pkgs, " "), dir, err)
	}
	return nil
}

func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
