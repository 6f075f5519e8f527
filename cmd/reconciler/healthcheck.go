package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const healthcheckHelp = `Healthcheck asks a running 'reconciler run' for /healthz (or /readyz with
--ready) and exits 0 when it answers 200, 1 otherwise. It is the container
image's HEALTHCHECK: the image has no curl, and the binary is there anyway.
The default address is the daemon's default --listen address
($RECONCILER_LISTEN, else 127.0.0.1:8080), on loopback when it listens on
all interfaces.`

func cmdHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healthcheck", "healthcheck [--addr URL] [--ready] [--timeout 5s]", stderr)
	addr := fs.String("addr", "", "base `URL` of the daemon (default: from $RECONCILER_LISTEN, else http://127.0.0.1:8080)")
	ready := fs.Bool("ready", false, "ask /readyz (the last pass succeeded and the ledger is trusted) instead of /healthz (the process serves)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", healthcheckHelp) }
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if *timeout <= 0 {
		return usageError(stderr, "--timeout %s: use a positive duration", *timeout)
	}
	u, err := daemonURL(*addr)
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	u = u.JoinPath(path)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(stderr, fmt.Errorf("healthcheck: %w", err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(stderr, fmt.Errorf("healthcheck: %w", err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fail(stderr, fmt.Errorf("healthcheck: %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body))))
	}
	fmt.Fprintf(stdout, "%s: %s\n", u, strings.TrimSpace(string(body)))
	return exitOK
}

// listenURL is the URL a client on this host reaches a server listening
// on addr at: an address on all interfaces (":8080", "0.0.0.0:8080",
// "[::]:8080") is reached on loopback.
// daemonURL is the daemon's base URL: --addr, or the address the daemon
// listens on by default (defaultListen).
func daemonURL(addr string) (*url.URL, error) {
	if addr == "" {
		addr = listenURL(defaultListen())
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--addr %q: want a URL such as http://127.0.0.1:8080", addr)
	}
	return u, nil
}

func listenURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
