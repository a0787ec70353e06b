package cancelevent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// FuzzParseRequest feeds arbitrary data to request validation: it must not panic; what it
// accepts must have safe ids and at most 20 plain addresses; what it refuses must be an
// *InvalidError; and either way a result can be built from it.
func FuzzParseRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b, "application/json")
		}
	}
	f.Add([]byte(`{"publisherId":"p","offerId":"o","notificationEmails":"a@b.c, d@e.f"}`), "")
	f.Add([]byte(`[]`), "text/plain")
	f.Fuzz(func(t *testing.T, data []byte, contentType string) {
		ev := event.New()
		ev.SetID("fuzz")
		ev.SetSource("/fuzz")
		ev.SetType(RequestType)
		ev.DataEncoded = data
		if contentType != "" {
			ev.SetDataContentType(contentType)
		}
		req, err := ParseRequest(&ev)
		var invalid *InvalidError
		switch {
		case err == nil:
			if !ValidID(req.PublisherID) || !ValidID(req.OfferID) {
				t.Fatalf("accepted unsafe ids %q, %q", req.PublisherID, req.OfferID)
			}
			if len(req.Emails) > maxEmails {
				t.Fatalf("accepted %d emails", len(req.Emails))
			}
			for _, e := range req.Emails {
				if strings.ContainsAny(e, ", \t\r\n") || !strings.Contains(e, "@") {
					t.Fatalf("accepted address %q", e)
				}
			}
		case errors.As(err, &invalid):
			if !utf8.ValidString(invalid.Reason) {
				t.Fatalf("reason is not UTF-8: %q", invalid.Reason)
			}
		default:
			t.Fatalf("error %v is not an *InvalidError", err)
		}
		if _, err := NewResult("/cpcancel", req, Failed, ResultData{Error: &ErrorData{Code: "x", Message: "y"}}, time.Now()); err != nil {
			t.Fatalf("cannot build a result: %v", err)
		}
	})
}
