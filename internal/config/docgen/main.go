// Command docgen writes the reference of cpcancel's environment variables, generated from the
// tags in internal/config, into the Markdown page it is given (docs/configuration.md), between
// the lines config.ReferenceBegin and config.ReferenceEnd. Run it with
//
//	go generate ./internal/config
package main

import (
	"fmt"
	"os"

	"github.com/cpcancel/cpcancel/internal/config"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: docgen PAGE.md")
	}
	page, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	updated, err := config.UpdateReference(page)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	return os.WriteFile(args[0], updated, 0o644)
}
