package natstest

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// OutageSubjects are the subjects to give Process.DenyPublish to make streams unavailable to
// clients without credentials: the streams' own subjects (every message stored in them: a
// bucket's puts, creates, updates and deletes, a stream's publishes) and the JetStream API
// requests that read them (direct and stream message gets, consumers for watches and listings).
// Stream info stays allowed, so that a client starting meanwhile still binds them. js reads the
// streams' subjects, so it must be unrestricted (Process.AdminURL).
func OutageSubjects(ctx context.Context, js jetstream.JetStream, streams ...string) ([]string, error) {
	var subjects []string
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		subjects = append(subjects, s.CachedInfo().Config.Subjects...)
		subjects = append(subjects,
			"$JS.API.DIRECT.GET."+name, "$JS.API.DIRECT.GET."+name+".>",
			"$JS.API.STREAM.MSG.GET."+name,
			"$JS.API.CONSUMER.CREATE."+name, "$JS.API.CONSUMER.CREATE."+name+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+name+".>")
	}
	return subjects, nil
}
