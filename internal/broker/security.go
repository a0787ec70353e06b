package broker

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Security is how cpcancel proves itself to NATS and checks the server: TLS (a CA, and a client
// certificate for mutual TLS), and one of a credentials file (JWT and NKey seed) or an NKey seed
// file. Empty fields are not used.
type Security struct {
	CA, Cert, Key string
	Creds         string
	NKeySeedFile  string
}

// Options turns s into connection options; errors name the setting at fault.
func (s Security) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if s.CA != "" {
		opts = append(opts, nats.RootCAs(s.CA))
	}
	if s.Cert != "" || s.Key != "" {
		opts = append(opts, nats.ClientCert(s.Cert, s.Key))
	}
	switch {
	case s.Creds != "" && s.NKeySeedFile != "":
		return nil, fmt.Errorf("CPCANCEL_NATS_CREDS and CPCANCEL_NATS_NKEY: set one, not both")
	case s.Creds != "":
		opts = append(opts, nats.UserCredentials(s.Creds))
	case s.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(s.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("CPCANCEL_NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	return opts, nil
}
