package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ParseBaseURL returns raw as an absolute API base URL without a trailing slash. It refuses
// anything but https, except plain http to a loopback host, and URLs carrying user information,
// a query or a fragment. Error messages never echo user information.
//
// It is the rule for CPCANCEL_CLOUDPARTNER_BASE_URL, which cloudpartner.New applies again to
// whatever base URL it is given: the token goes nowhere else.
func ParseBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("base URL is empty")
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
		return nil, fmt.Errorf("base URL %q is not absolute, want e.g. https://cloudpartner.azure.com", raw)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("base URL %q must not have a query", raw)
	case u.Fragment != "":
		return nil, fmt.Errorf("base URL %q must not have a fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("base URL %q: plain http is allowed only for a loopback host, use https", raw)
		}
	default:
		return nil, fmt.Errorf("base URL %q: scheme must be https", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
