package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLogLevel maps CPCANCEL_LOG_LEVEL to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// Logger builds the service logger from CPCANCEL_LOG_LEVEL and CPCANCEL_LOG_FORMAT.
func (l Log) Logger(w io.Writer) *slog.Logger {
	level, _ := ParseLogLevel(l.Level) // validated by Load
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
