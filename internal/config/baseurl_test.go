package config_test

import (
	"strings"
	"testing"

	"github.com/cpcancel/cpcancel/internal/config"
)

func TestParseBaseURL(t *testing.T) {
	tests := []struct {
		raw, want string // want "" means refused
	}{
		{"https://cloudpartner.azure.com", "https://cloudpartner.azure.com"},
		{"https://cloudpartner.azure.com/", "https://cloudpartner.azure.com"},
		{"https://gw.example.com:8443/cpp/", "https://gw.example.com:8443/cpp"},
		{"HTTPS://cloudpartner.azure.com", "https://cloudpartner.azure.com"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.1.2.3", "http://127.1.2.3"},
		{"http://localhost", "http://localhost"},
		{"http://LOCALHOST:9000/", "http://LOCALHOST:9000"},
		{"http://[::1]:1", "http://[::1]:1"},
		{"http://example.com", ""},
		{"http://10.0.0.1", ""},
		{"http://localhost.example.com", ""},
		{"ftp://cloudpartner.azure.com", ""},
		{"cloudpartner.azure.com", ""},
		{"/api", ""},
		{"", ""},
		{"https://", ""},
		{"https://user:secret@cloudpartner.azure.com", ""},
		{"https:/user:secret@cloudpartner.azure.com", ""}, // user information that url.Parse reads as a path
		{"ftp://user:secret@cloudpartner.azure.com/#x", ""},
		{"https://cloudpartner.azure.com/?x=1", ""},
		{"https://cloudpartner.azure.com/#frag", ""},
		{"https://cloud partner", ""},
		{"https://cloudpartner.azure.com/" + strings.Repeat("a", config.MaxBaseURLBytes-31), "https://cloudpartner.azure.com/" + strings.Repeat("a", config.MaxBaseURLBytes-31)},
		{"https://cloudpartner.azure.com/" + strings.Repeat("a", config.MaxBaseURLBytes-30), ""},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			u, err := config.ParseBaseURL(tc.raw)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseBaseURL(%q) = %v, want an error", tc.raw, u)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q echoes the password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBaseURL(%q): %v", tc.raw, err)
			}
			if u.String() != tc.want {
				t.Errorf("ParseBaseURL(%q) = %q, want %q", tc.raw, u, tc.want)
			}
		})
	}
}
