package broker

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/cpcancel/cpcancel/internal/config"
)

// SecurityOptions turns the NATS settings into connection options: TLS (a CA, and a client
// certificate for mutual TLS), and one of a credentials file (JWT and NKey seed) or an NKey seed
// file. Empty settings are not used; errors name the variable at fault.
func SecurityOptions(n config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	if n.CA != "" {
		opts = append(opts, nats.RootCAs(n.CA))
	}
	if n.Cert != "" || n.Key != "" {
		opts = append(opts, nats.ClientCert(n.Cert, n.Key))
	}
	switch {
	case n.Creds != "" && n.NKey != "":
		return nil, fmt.Errorf("CPCANCEL_NATS_CREDS and CPCANCEL_NATS_NKEY: set one, not both")
	case n.Creds != "":
		opts = append(opts, nats.UserCredentials(n.Creds))
	case n.NKey != "":
		opt, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return nil, fmt.Errorf("CPCANCEL_NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	return opts, nil
}
