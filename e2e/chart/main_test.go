package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	// repoRoot is the creditgate checkout (e2e/chart is two levels down).
	repoRoot string
	// chartDir is charts/creditgate.
	chartDir string
	// workDir holds the binaries built for the tests; removed by TestMain.
	workDir string
)

func TestMain(m *testing.M) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	chartDir = filepath.Join(root, "charts", "creditgate")
	workDir, err = os.MkdirTemp("", "creditgate-chart-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(workDir)
	os.Exit(code)
}

// inCI reports whether the tests run in CI, where nothing may be skipped.
func inCI() bool { return os.Getenv("CI") != "" }

// cacheBin is hack/tools.sh's bin directory.
func cacheBin() string {
	cache := os.Getenv("CREDITGATE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "creditgate")
	}
	return filepath.Join(cache, "bin")
}

var (
	toolsOnce sync.Once
	toolPaths map[string]string
	toolsErr  error
)

// lookTools finds helm and promtool: hack/tools.sh's cache first (the pinned
// versions), then PATH. In CI a missing tool is built with hack/tools.sh.
func lookTools() (map[string]string, error) {
	find := func() (map[string]string, []string) {
		paths := map[string]string{}
		var missing []string
		for _, name := range []string{"helm", "promtool"} {
			p := filepath.Join(cacheBin(), name)
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				paths[name] = p
				continue
			}
			if p, err := exec.LookPath(name); err == nil {
				paths[name] = p
				continue
			}
			missing = append(missing, name)
		}
		return paths, missing
	}
	paths, missing := find()
	if len(missing) == 0 {
		return paths, nil
	}
	if !inCI() {
		return nil, fmt.Errorf("%s not found in %s or PATH: run `bash hack/tools.sh` to build the pinned versions (minutes from a cold cache)",
			strings.Join(missing, " and "), cacheBin())
	}
	// CI must run these tests: build the tools now.
	cmd := exec.Command("bash", filepath.Join(repoRoot, "hack", "tools.sh"))
	cmd.Stderr = os.Stderr
	if _, err := cmd.Output(); err != nil {
		return nil, fmt.Errorf("hack/tools.sh: %w", err)
	}
	if paths, missing = find(); len(missing) > 0 {
		return nil, fmt.Errorf("%s still missing after hack/tools.sh", strings.Join(missing, " and "))
	}
	return paths, nil
}

// tool returns the path of helm or promtool. Without them the test is
// skipped, except in CI (CI set), where it fails.
func tool(t *testing.T, name string) string {
	t.Helper()
	toolsOnce.Do(func() { toolPaths, toolsErr = lookTools() })
	if toolsErr != nil {
		if inCI() {
			t.Fatalf("chart tools: %v", toolsErr)
		}
		t.Skipf("skipping: %v", toolsErr)
	}
	return toolPaths[name]
}

// run runs a command and returns its stdout; stderr is in the error.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binary returns the path of creditgate's webhook or reconciler binary,
// built once from this checkout.
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		_, buildErr = run(ctx, repoRoot, nil, goBin, "build", "-o", workDir+string(os.PathSeparator), "./cmd/webhook", "./cmd/reconciler")
	})
	if buildErr != nil {
		t.Fatalf("build the binaries: %v", buildErr)
	}
	return filepath.Join(workDir, name)
}

// binaryEnv is what one binary reads, from the binary itself.
type binaryEnv struct {
	// Reads is every variable it reads (`<binary> env`).
	Reads []string
	// Defaults are the loader's defaults of those it defaults (`<binary>
	// env` prints NAME=default).
	Defaults map[string]string
	// Required are the variables whose absence stops it: the names its
	// configuration errors call required when it starts with an empty
	// environment.
	Required []string
}

var (
	envOnce  sync.Once
	envByBin map[string]binaryEnv
	envErr   error
)

var requiredRE = regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*): required`)

// binaryEnvs returns what the webhook and the reconciler read, derived from
// their code: `webhook env`, `reconciler env`, and their start-up errors with
// an empty environment.
func binaryEnvs(t *testing.T) map[string]binaryEnv {
	t.Helper()
	bins := map[string]string{"webhook": binary(t, "webhook"), "reconciler": binary(t, "reconciler")}
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		envByBin = map[string]binaryEnv{}
		for name, bin := range bins {
			out, err := run(ctx, "", []string{}, bin, "env")
			if err != nil {
				envErr = err
				return
			}
			e := binaryEnv{Defaults: map[string]string{}}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				name, def, ok := strings.Cut(line, "=")
				if !ok {
					envErr = fmt.Errorf("%s env: %q is not NAME=default", name, line)
					return
				}
				e.Reads = append(e.Reads, name)
				if def != "" {
					e.Defaults[name] = def
				}
			}
			sort.Strings(e.Reads)
			e.Reads = slices.Compact(e.Reads)
			// With nothing set, the configuration check fails before anything
			// else and names every required variable.
			_, err = run(ctx, "", []string{}, bin)
			var exit *exec.ExitError
			if err == nil || !errors.As(err, &exit) {
				envErr = fmt.Errorf("%s with an empty environment: want a configuration error, got %v", name, err)
				return
			}
			for _, m := range requiredRE.FindAllStringSubmatch(err.Error(), -1) {
				e.Required = append(e.Required, m[1])
			}
			sort.Strings(e.Required)
			if len(e.Reads) == 0 || len(e.Required) == 0 {
				envErr = fmt.Errorf("%s: no variables read (%q) or required (%v)", name, e.Reads, err)
				return
			}
			envByBin[name] = e
		}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return envByBin
}
