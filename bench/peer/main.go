// Command peer is a Benthos (github.com/redpanda-data/benthos/v4 v4.60.0) binary with the io and
// pure component sets and a nats_jetstream input and output of its own, modelled on Redpanda
// Connect's: the benchmark peer of cpcancel. Run: peer run pipeline.yaml
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	registerJetStreamInput()
	registerJetStreamOutput()
	service.RunCLI(context.Background())
}
