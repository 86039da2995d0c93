package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

// defaultHealthURL is the daemon's /healthz on this machine, at the default
// listen address.
const defaultHealthURL = "http://127.0.0.1" + DefaultListenAddress + "/healthz"

// healthBodyMax bounds how much of a failed answer's body the reason quotes.
const healthBodyMax = 200

// healthOptions are the flags of `chimeraforge health`.
type healthOptions struct {
	url      string
	timeout  time.Duration
	insecure bool
}

// registerHealthFlags adds the flags of `chimeraforge health`: a probe for
// container health checks, since the runtime image has no shell or curl.
func registerHealthFlags(c *kingpin.CmdClause) *healthOptions {
	o := &healthOptions{}
	c.Flag("url", "URL to GET: /healthz (the process is up) or /readyz (its targets answered) of a daemon, or any http(s) URL; basic auth as http://USER:PASSWORD@HOST:PORT/… (redacted in messages).").
		Default(defaultHealthURL).StringVar(&o.url)
	c.Flag("timeout", "Longest wait for the whole answer.").Default("3s").DurationVar(&o.timeout)
	c.Flag("insecure-skip-verify", "Accept any TLS certificate (an https daemon with a self-signed one, probed over loopback).").BoolVar(&o.insecure)
	return o
}

// runHealth GETs o.url once, without proxies or redirects, and returns nil
// on 200 OK; otherwise an error of one line saying why (the status and the
// start of the body, or the transport error).
func runHealth(ctx context.Context, o *healthOptions) error {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("health: --url %q: want an absolute http:// or https:// URL", o.url)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("health: --timeout must be > 0, got %s", o.timeout)
	}
	tr := &http.Transport{
		Proxy:             nil, // probe the address itself, whatever HTTP_PROXY says
		DisableKeepAlives: true,
	}
	if o.insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // asked for, by name
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("health: GET %s: %w", u.Redacted(), err)
	}
	req.Header.Set("User-Agent", "chimeraforge-health")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: GET %s: %s", u.Redacted(), transportReason(ctx, err, o.timeout))
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, healthBodyMax))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	reason := resp.Status
	if s := oneLine(string(body)); s != "" {
		reason += ": " + s
	} else if err != nil {
		reason += " (body: " + transportReason(ctx, err, o.timeout) + ")"
	}
	return fmt.Errorf("health: GET %s: %s", u.Redacted(), reason)
}

// transportReason words a failed exchange; a timeout says how long it waited.
func transportReason(ctx context.Context, err error, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // the URL is said already
	}
	return oneLine(err.Error())
}

// oneLine keeps the first line of s, trimmed, with control characters
// dropped, so that the reason stays one line of a health log.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
