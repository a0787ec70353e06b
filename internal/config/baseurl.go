package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// MaxBaseURLBytes bounds the base URL: operation locations are made absolute with it, and what
// carries them (follow tasks) is bounded in turn.
const MaxBaseURLBytes = 2048

// ParseBaseURL returns raw as an absolute API base URL without a trailing slash. It refuses
// anything but https, except plain http to a loopback host, URLs carrying user information, a
// query or a fragment, and URLs over MaxBaseURLBytes. Error messages never echo user information.
//
// It is the rule for CPCANCEL_CLOUDPARTNER_BASE_URL, which cloudpartner.New applies again to
// whatever base URL it is given: the token goes nowhere else.
func ParseBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("base URL is empty")
	}
	if len(raw) > MaxBaseURLBytes {
		return nil, fmt.Errorf("base URL is longer than %d bytes", MaxBaseURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the raw URL, which may hold a password
		}
		return nil, fmt.Errorf("base URL is not a valid URL: %w", err)
	}
	switch {
	case u.User != nil:
		return nil, errors.New("base URL must not contain user information")
	case u.Scheme == "" || u.Opaque != "" || u.Hostname() == "":
		return nil, fmt.Errorf("base URL %s is not absolute, want e.g. https://cloudpartner.azure.com", show(raw))
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("base URL %s must not have a query", show(raw))
	case u.Fragment != "":
		return nil, fmt.Errorf("base URL %s must not have a fragment", show(raw))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("base URL %s: plain http is allowed only for a loopback host, use https", show(raw))
		}
	default:
		return nil, fmt.Errorf("base URL %s: scheme must be https", show(raw))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

// show quotes raw for an error message, unless it may hold a password: a URL that url.Parse does
// not read as carrying user information may still hold one ("https:/user:password@host").
func show(raw string) string {
	if strings.Contains(raw, "@") {
		return "(not shown: it contains @)"
	}
	return strconv.Quote(raw)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
