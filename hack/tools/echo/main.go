// Command echo is the local cluster's network probe. As a server (the
// default) it answers every HTTP request with one line naming itself, so a
// Service in front of it shows which pod answered; with -get it is the
// client: it fetches a URL, prints the body and exits non-zero unless the
// answer is a 2xx. The images have no shell or curl, so smoke checks run this.
//
//	echo [-listen :8080]
//	echo -get http://10.96.0.10/ [-timeout 10s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("echo", flag.ContinueOnError)
	fl.SetOutput(stderr)
	listen := fl.String("listen", ":8080", "address to serve on")
	get := fl.String("get", "", "fetch this URL instead of serving, print the body, fail unless 2xx")
	timeout := fl.Duration("timeout", 10*time.Second, "with -get: give up after this long, retrying every second until then")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *get != "" {
		return fetch(ctx, *get, *timeout, stdout)
	}
	return serve(ctx, *listen, stderr)
}

func serve(ctx context.Context, addr string, stderr io.Writer) error {
	host, _ := os.Hostname()
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "echo host=%s remote=%s path=%s\n", host, r.RemoteAddr, r.URL.Path)
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Fprintf(stderr, "echo: serving on %s as %s\n", addr, host)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// fetch retries until timeout, so a probe started alongside its target
// does not fail on the target's first second.
func fetch(ctx context.Context, url string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 3 * time.Second}
	var last error
	for {
		body, err := getOnce(ctx, client, url)
		if err == nil {
			fmt.Fprint(stdout, body)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("get %s: %w", url, last)
		case <-time.After(time.Second):
		}
	}
}

func getOnce(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}
