package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/broker"
	"github.com/cpcancel/cpcancel/internal/config"
)

// The exit statuses of the operator commands (consumer status, consumer deadletter); every
// other command exits 1 on any error.
const (
	exitUnknown = 1 // the request or dead letter is not known, or the command failed
	exitUsage   = 2 // bad or missing flags or arguments
)

// usageError is a command line that cannot be run as given.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitStatus is the process exit status for err, which is not nil.
func exitStatus(err error) int {
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitUnknown
}

// parseFlags parses args into fs: nil and false after -h (the help is printed), a usageError
// for a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (ok bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, usageError{err}
	}
	return true, nil
}

// operatorFlags are the flags every operator command shares: where NATS is, and the
// configuration naming streams and the bucket, read from the environment as the service reads it.
type operatorFlags struct {
	natsURL string
	cfg     config.Config
}

// newOperatorFlags defines the shared flags on fs. The names of streams, subjects and the bucket
// come from the CPCANCEL_* variables (unvalidated: a variable for another part of the service
// may be unset or wrong here), else their defaults.
func newOperatorFlags(fs *flag.FlagSet) (*operatorFlags, error) {
	cfg, err := config.Read(os.LookupEnv)
	if err != nil {
		return nil, usageError{fmt.Errorf("configuration: %w", err)}
	}
	o := &operatorFlags{cfg: cfg}
	natsURLFlag(fs, &o.natsURL)
	return o, nil
}

// connect connects to NATS as consumer publish does: the same URL flag and security variables,
// no reconnecting. Close the connection when done.
func (o *operatorFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	settings, err := config.ReadNATS(os.LookupEnv)
	if err != nil {
		return nil, nil, usageError{err}
	}
	security, err := broker.SecurityOptions(settings)
	if err != nil {
		return nil, nil, usageError{err}
	}
	nc, err := broker.Connect(o.natsURL, name, discard, append(security, nats.MaxReconnects(0))...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
