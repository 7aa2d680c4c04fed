// Command svixsend signs Clerk-shaped webhook events the way Svix does and
// POSTs them to creditgate's receiver: one event, to try an endpoint by hand,
// or many from concurrent senders, to measure it (docs/benchmarks.md).
//
//	svixsend -type user.created                       # one new user; prints status and body
//	svixsend -type user.deleted -user user_123        # delete that user
//	svixsend -n 20000 -c 16                           # 20,000 new users from 16 senders; prints a summary
//	svixsend -dry-run -type user.created              # print the signed request, send nothing
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

const envSigningSecret = "CLERK_WEBHOOK_SIGNING_SECRET"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "svixsend:", err)
		os.Exit(1)
	}
}

type options struct {
	// gen takes the flags that say what to send (-type, -user, -email, -svix-id).
	gen                         svixsender.Generator
	url, secret, client         string
	n, c                        int
	unique, dryRun, pregenerate bool
	timeout                     time.Duration
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("svixsend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080/api/webhooks/clerk", "receiver `URL`")
	fs.StringVar(&o.secret, "secret", "", "whsec_ signing `secret` (default: the first one in $"+envSigningSecret+")")
	fs.StringVar(&o.gen.EventType, "type", clerkevent.UserCreated, "event `type`: "+strings.Join(clerkevent.Types, ", "))
	fs.StringVar(&o.gen.User, "user", "", "Clerk user `id` (default: a new random user_…)")
	fs.StringVar(&o.gen.Email, "email", "", "primary email `address` (default: derived from the user id)")
	fs.StringVar(&o.gen.SvixID, "svix-id", "", "svix-id of the message (default: a new random msg_…); with -n, every event reuses it (redeliveries)")
	fs.IntVar(&o.n, "n", 1, "events to send; more than 1 is load mode and prints a summary")
	fs.IntVar(&o.c, "c", 16, "concurrent senders in load mode")
	fs.BoolVar(&o.unique, "unique", true, "load mode: each event is about a new user; false: all about one user (-user or a random one)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.StringVar(&o.client, "client", "net/http", "load mode's HTTP client: net/http, or lean (one connection per sender driven in its own goroutine, plain http:// only; costs the sender much less CPU, for benchmarks on a shared machine)")
	fs.BoolVar(&o.pregenerate, "pregenerate", false, "load mode: build every event body before the clock starts (benchmarks: the sender then costs less CPU during the run); needs about 2 KB of memory per event")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the signed request (headers, blank line, body) instead of sending it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: svixsend [flags]\n\nSigns Clerk-shaped events as Svix does and POSTs them. Flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	var errs []error
	// Like the receiver: several secrets may be given during a rotation.
	if secrets := strings.Fields(strings.ReplaceAll(getenv(envSigningSecret), ",", " ")); o.secret == "" && len(secrets) > 0 {
		o.secret = secrets[0]
	}
	if o.secret == "" {
		errs = append(errs, fmt.Errorf("-secret or %s is required", envSigningSecret))
	} else if !strings.HasPrefix(o.secret, "whsec_") {
		errs = append(errs, errors.New("the signing secret must start with whsec_"))
	}
	if !slices.Contains(clerkevent.Types, o.gen.EventType) {
		errs = append(errs, fmt.Errorf("-type must be one of %s, got %q", strings.Join(clerkevent.Types, ", "), o.gen.EventType))
	}
	if o.n < 1 {
		errs = append(errs, fmt.Errorf("-n must be at least 1, got %d", o.n))
	}
	if o.c < 1 {
		errs = append(errs, fmt.Errorf("-c must be at least 1, got %d", o.c))
	}
	if o.n > 1 && o.unique && (o.gen.User != "" || o.gen.Email != "") {
		errs = append(errs, errors.New("-user and -email name one user: use them with -unique=false in load mode"))
	}
	if o.client != "net/http" && o.client != "lean" {
		errs = append(errs, fmt.Errorf("-client must be net/http or lean, got %q", o.client))
	} else if o.client == "lean" && !strings.HasPrefix(o.url, "http://") {
		errs = append(errs, errors.New("-client=lean speaks plain http:// only"))
	}
	if o.timeout <= 0 {
		errs = append(errs, errors.New("-timeout must be positive"))
	}
	return o, errors.Join(errs...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	s, err := svixsender.New(o.url, o.secret, svixsender.Options{
		Conns: o.c, Timeout: o.timeout, Lean: o.client == "lean", UserAgent: "svixsend (creditgate)",
	})
	if err != nil {
		return err
	}
	g := &o.gen
	g.InstanceID, g.Unique = clerkevent.NewID("ins"), o.n > 1 && o.unique
	if !g.Unique {
		g.User = cmp.Or(g.User, clerkevent.NewID("user"))
		g.Email = cmp.Or(g.Email, clerkevent.EmailFor(g.User))
	}

	if o.n == 1 || o.dryRun {
		return sendOne(ctx, s, o, stdout, stderr)
	}
	fmt.Fprintf(stderr, "svixsend: sending %d %s events to %s from %d senders\n", o.n, o.gen.EventType, o.url, o.c)
	res, err := svixsender.Load(ctx, s, g, o.n, o.c, o.pregenerate)
	res.Print(stdout)
	if err != nil {
		return err
	}
	if f := res.Failed(); f > 0 {
		return fmt.Errorf("%d of %d deliveries failed", f, res.Sent())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return nil
}

// sendOne sends (or, with -dry-run, prints) one event and prints the
// response status and body; a non-2xx answer is an error, for scripts.
func sendOne(ctx context.Context, s *svixsender.Sender, o options, stdout, stderr io.Writer) error {
	m := o.gen.Message()
	if o.dryRun {
		fmt.Fprintf(stdout, "POST %s\n", o.url)
		_ = s.Headers(m, time.Now()).Write(stdout)
		fmt.Fprintf(stdout, "\n%s\n", m.Body)
		return nil
	}
	fmt.Fprintf(stderr, "svixsend: %s svix-id=%s user=%s (%d bytes)\n", m.Type, m.ID, m.UserID, len(m.Body))
	a := s.Post(ctx, m, time.Now(), nil)
	if a.Err != nil {
		return a.Err
	}
	fmt.Fprintf(stdout, "%d %s\n%s", a.Status, http.StatusText(a.Status), a.Body)
	if len(a.Body) > 0 && a.Body[len(a.Body)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	if !a.OK() {
		return fmt.Errorf("status %d (%s)", a.Status, a.Latency.Round(time.Microsecond))
	}
	return nil
}
