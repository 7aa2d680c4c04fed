// Command echo is the local cluster's network probe. As a server (the
// default) it answers every HTTP request with one line naming itself, so a
// Service in front of it shows which pod answered; with -get it is the
// client: it fetches a URL, prints the body and exits non-zero unless the
// answer is a 2xx. The images have no shell or curl, so smoke checks run this.
//
//	echo [-listen :8080]
//	echo -get http://10.96.0.10/ [-timeout 10s]
//	echo -call http://10.96.0.11:8081/v1/… [-method POST] [-body JSON] [-header 'K: V']… [-bearer-file FILE]
//
// -call is an API client for the e2e suite's in-cluster callers: it sends one
// request (retrying only while it cannot connect), with the bearer token read
// from a file (a projected ServiceAccount token), and prints
// "status=<code> body=<body>" whatever the status.
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
	"strings"
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
	timeout := fl.Duration("timeout", 10*time.Second, "with -get or -call: give up after this long, retrying every second until then")
	call := fl.String("call", "", "send one request to this URL and print its status and body")
	method := fl.String("method", http.MethodGet, "with -call: the method")
	body := fl.String("body", "", "with -call: the JSON body")
	bearerFile := fl.String("bearer-file", "", "with -call: send Authorization: Bearer <this file's content>")
	var headers headerFlags
	fl.Var(&headers, "header", "with -call: a 'Name: value' header (repeatable)")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case *get != "":
		return request(ctx, http.MethodGet, *get, "", "", nil, true, *timeout, stdout)
	case *call != "":
		return request(ctx, *method, *call, *body, *bearerFile, headers, false, *timeout, stdout)
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

type headerFlags []string

func (h *headerFlags) String() string     { return fmt.Sprint(*h) }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// request sends one request and prints the answer, retrying every second
// until timeout while the connection fails, so that a probe started alongside
// its target does not fail on the target's first second. With get it prints
// only the body and retries (and in the end fails) unless the answer is a
// 2xx; otherwise it prints "status=<code> body=<body>" whatever the status.
func request(ctx context.Context, method, url, body, bearerFile string, headers []string, get bool, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			return err
		}
		if !get {
			req.Header.Set("Content-Type", "application/json")
		}
		for _, h := range headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return fmt.Errorf("-header %q is not 'Name: value'", h)
			}
			req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if bearerFile != "" {
			tok, err := os.ReadFile(bearerFile)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		}
		resp, err := client.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			switch {
			case get && rerr != nil:
				err = fmt.Errorf("read body: %w", rerr)
			case !get:
				fmt.Fprintf(stdout, "status=%d body=%s\n", resp.StatusCode, strings.TrimSpace(string(b)))
				return nil
			case resp.StatusCode/100 == 2:
				fmt.Fprint(stdout, string(b))
				return nil
			default:
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %w", method, url, err)
		case <-time.After(time.Second):
		}
	}
}
