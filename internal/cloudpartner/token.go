package cloudpartner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	maxTokenFileBytes = 16 << 10
	tokenStatInterval = time.Second
)

// StaticToken returns a TokenSource that always supplies token, e.g. one given in the
// environment. Refreshing cannot help it; an empty token is an error.
func StaticToken(token string) TokenSource { return staticToken(strings.TrimSpace(token)) }

type staticToken string

func (t staticToken) Token(context.Context, bool) (string, error) {
	if t == "" {
		return "", errors.New("static token is empty")
	}
	return string(t), nil
}

// FileToken reads a bearer token from a file (e.g. a mounted Kubernetes secret) and re-reads it
// when the file's modification time or size changes, or when a refresh is asked for. Without a
// refresh it looks at the file at most once a second. Surrounding whitespace is trimmed, files
// over 16 KiB and empty tokens are errors. It is safe for concurrent use.
type FileToken struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	token   string
	modTime time.Time
	size    int64
	checked time.Time
}

var _ TokenSource = (*FileToken)(nil)

// NewFileToken returns a FileToken for path. The file is first read on the first call to Token.
func NewFileToken(path string) *FileToken {
	return &FileToken{path: path, now: time.Now}
}

// Token returns the file's current token; refresh forces a re-read.
func (f *FileToken) Token(_ context.Context, refresh bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	now := f.now()
	if !refresh && f.token != "" && now.Sub(f.checked) < tokenStatInterval {
		return f.token, nil
	}
	info, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	f.checked = now
	if !refresh && f.token != "" && info.ModTime().Equal(f.modTime) && info.Size() == f.size {
		return f.token, nil
	}
	token, err := readToken(f.path)
	if err != nil {
		return "", err
	}
	f.token, f.modTime, f.size = token, info.ModTime(), info.Size()
	return token, nil
}

func readToken(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if len(data) > maxTokenFileBytes {
		return "", fmt.Errorf("token file %s is larger than %d bytes", path, maxTokenFileBytes)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return token, nil
}
