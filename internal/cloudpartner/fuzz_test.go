package cloudpartner

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzResponse feeds arbitrary answers to the response parsing: the location must be empty or an
// absolute http(s) URL without control characters or the token, and the error code, message and
// correlation id bounded, valid UTF-8 and free of the token.
func FuzzResponse(f *testing.F) {
	f.Add(202, "/api/operations/contoso$contoso-offer$2$preview?api-version=2017-10-31", "", []byte(`{}`))
	f.Add(202, "", "https://cloudpartner.azure.com/api/publishers/p/offers/o/operations/1", []byte(``))
	f.Add(202, "", "", []byte(`{"location":"/api/publishers/p/offers/o/operations/1"}`))
	f.Add(404, "", "", []byte(`{"error":{"code":"OfferNotFound","message":"no such offer"}}`))
	f.Add(429, "//evil.example/x", "javascript:alert(1)", []byte(`{"error":{"code":"`+fuzzToken+`","message":"Bearer `+fuzzToken+`"}}`))
	f.Add(500, "", "", []byte("<html>\x00\xff</html>"))
	c := &Client{base: "https://cloudpartner.azure.com"}
	f.Fuzz(func(t *testing.T, status int, loc, opLoc string, body []byte) {
		h := http.Header{}
		h.Set("Location", loc)
		h.Set("Operation-Location", opLoc)
		h.Set("X-Ms-Correlation-Request-Id", opLoc)
		if got := c.location(h, body, []string{fuzzToken}); got != "" {
			if strings.Contains(got, fuzzToken) {
				t.Fatalf("location %q holds the token", got)
			}
			u, err := url.Parse(got)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				t.Fatalf("location %q is not an absolute http(s) URL", got)
			}
			if strings.ContainsFunc(got, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("location %q holds control characters or spaces", got)
			}
			_ = operationID(got)
		}
		status = 300 + (status%300+300)%300 // 300..599: the error answers
		e := statusError(&http.Response{StatusCode: status, Header: h}, body, []string{fuzzToken})
		for name, s := range map[string]string{"code": e.Code, "message": e.Message, "correlation id": e.CorrelationID} {
			if !utf8.ValidString(s) || strings.Contains(s, fuzzToken) {
				t.Fatalf("%s %q is not clean UTF-8 without the token", name, s)
			}
		}
		if len(e.Code) > maxCodeBytes || len(e.Message) > maxMessageBytes {
			t.Fatalf("code or message too long: %d, %d bytes", len(e.Code), len(e.Message))
		}
	})
}

const fuzzToken = "s3cr3t-fuzz-token"
