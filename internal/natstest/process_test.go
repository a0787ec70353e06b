package natstest_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/natstest"
)

func TestMain(m *testing.M) {
	natstest.MaybeRunServerProcess()
	os.Exit(m.Run())
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func publish(js jetstream.JetStream, subject string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := js.Publish(ctx, subject, []byte("x"))
	return err
}

func msgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		s, err := js.Stream(ctx, "S")
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil {
				return info.State.Msgs
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream S: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProcessKillRestartDeny(t *testing.T) {
	p := natstest.StartProcess(t, t.TempDir())
	_, admin := p.ConnectAdmin(t)
	client := connect(t, p.URL())
	if _, err := admin.CreateStream(context.Background(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if err := publish(client, "s.a", 5*time.Second); err != nil {
		t.Fatalf("publish before the kill: %v", err)
	}

	must(t, p.Kill())
	if p.Running() {
		t.Fatal("Running() after Kill")
	}
	must(t, p.Restart())
	if err := publish(client, "s.b", 10*time.Second); err != nil {
		t.Fatalf("publish after the restart (same port, reconnected): %v", err)
	}
	if n := msgs(t, admin); n != 2 {
		t.Fatalf("stream holds %d messages after SIGKILL and restart, want 2 (same store)", n)
	}

	must(t, p.DenyPublish("s.denied.>"))
	if err := publish(client, "s.denied.x", 500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("publish to a denied subject: %v, want a timeout", err)
	}
	if err := publish(client, "s.ok", 5*time.Second); err != nil {
		t.Errorf("publish to a subject not denied: %v", err)
	}
	if err := publish(admin, "s.denied.y", 5*time.Second); err != nil {
		t.Errorf("admin publish to a denied subject: %v", err)
	}
	must(t, p.Stop())
	must(t, p.Restart()) // the restriction survives a restart
	if err := publish(client, "s.denied.z", 500*time.Millisecond); err == nil {
		t.Error("publish to a denied subject after a restart succeeded")
	}
	must(t, p.DenyPublish())
	if err := publish(client, "s.denied.w", 5*time.Second); err != nil {
		t.Errorf("publish after lifting the restriction: %v", err)
	}
	if n := msgs(t, admin); n != 5 {
		t.Errorf("stream holds %d messages, want 5", n)
	}
}
