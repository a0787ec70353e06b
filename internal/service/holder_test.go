package service

import "testing"

// Two processes on one host with one pid (a container restarted in its pod) hold leases under
// different names: a holder takes a claim under its own name for a write of its own.
func TestHolderNamesDiffer(t *testing.T) {
	if a, b := holderName(), holderName(); a == b {
		t.Errorf("holder names %q and %q are the same", a, b)
	}
}
