package cloudpartner

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStaticToken(t *testing.T) {
	got, err := StaticToken(" abc \n").Token(context.Background(), true)
	if err != nil || got != "abc" {
		t.Errorf("StaticToken(\" abc \\n\").Token = %q, %v; want \"abc\", nil", got, err)
	}
	if _, err := StaticToken("").Token(context.Background(), false); err == nil {
		t.Error("StaticToken(\"\").Token succeeded, want an error")
	}
}

// fakeClock is a settable clock for FileToken.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// writeToken writes content to path and sets its modification time to mtime.
func writeToken(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestFileTokenRotation(t *testing.T) {
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		advance time.Duration
		refresh bool
		want    string
	}
	tests := []struct {
		name    string
		rewrite func(t *testing.T, path string) // after the first read
		steps   []step
	}{
		{
			name: "same size and mtime is only picked up on refresh",
			rewrite: func(t *testing.T, path string) {
				writeToken(t, path, "token-2\n", mtime)
			},
			steps: []step{
				{advance: 5 * time.Second, want: "token-1"},
				{refresh: true, want: "token-2"},
			},
		},
		{
			name: "new mtime is picked up after a second",
			rewrite: func(t *testing.T, path string) {
				writeToken(t, path, "token-2\n", mtime.Add(time.Minute))
			},
			steps: []step{
				{advance: 500 * time.Millisecond, want: "token-1"},
				{advance: time.Second, want: "token-2"},
			},
		},
		{
			name: "new size is picked up after a second",
			rewrite: func(t *testing.T, path string) {
				writeToken(t, path, "token-longer", mtime)
			},
			steps: []step{
				{want: "token-1"},
				{advance: 2 * time.Second, want: "token-longer"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			writeToken(t, path, "token-1\n", mtime)
			clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			ft := NewFileToken(path)
			ft.now = clock.now

			if got, err := ft.Token(context.Background(), false); err != nil || got != "token-1" {
				t.Fatalf("first Token = %q, %v; want token-1", got, err)
			}
			tc.rewrite(t, path)
			for i, s := range tc.steps {
				clock.advance(s.advance)
				got, err := ft.Token(context.Background(), s.refresh)
				if err != nil || got != s.want {
					t.Errorf("step %d: Token(refresh=%v) = %q, %v; want %q", i, s.refresh, got, err, s.want)
				}
			}
		})
	}
}

func TestFileTokenErrors(t *testing.T) {
	tests := []struct {
		name    string
		content *string // nil: no file
		wantIs  error
	}{
		{name: "missing file", wantIs: fs.ErrNotExist},
		{name: "empty file", content: ptr(" \n\t")},
		{name: "larger than 16 KiB", content: ptr(strings.Repeat("a", 16<<10+1))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := NewFileToken(path).Token(context.Background(), false)
			if err == nil {
				t.Fatalf("Token = %q, want an error", got)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
		})
	}
}

func TestFileTokenConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeToken(t, path, "token-1", time.Now())
	ft := NewFileToken(path)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if got, err := ft.Token(context.Background(), i%2 == 0); err != nil || got != "token-1" {
					t.Errorf("Token = %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func ptr[T any](v T) *T { return &v }
