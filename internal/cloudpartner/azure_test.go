package cloudpartner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// fakeCredential hands out numbered tokens that expire after ttl.
type fakeCredential struct {
	mu     sync.Mutex
	calls  int
	ttl    time.Duration
	scopes []string
	err    error
}

func (f *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.scopes = o.Scopes
	if f.err != nil {
		return azcore.AccessToken{}, f.err
	}
	return azcore.AccessToken{Token: fmt.Sprintf("token-%d", f.calls), ExpiresOn: time.Now().Add(f.ttl)}, nil
}

// hangingCredential never answers: GetToken returns only when its ctx is done, as against an
// identity endpoint that accepts the connection and then says nothing.
type hangingCredential struct {
	started chan struct{} // closed by the first call
	once    sync.Once
}

func (h *hangingCredential) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	h.once.Do(func() { close(h.started) })
	<-ctx.Done()
	return azcore.AccessToken{}, ctx.Err()
}

func TestAzureToken(t *testing.T) {
	ctx := context.Background()
	t.Run("cached until five minutes before expiry", func(t *testing.T) {
		cred := &fakeCredential{ttl: time.Hour}
		a := NewAzureToken(cred, "")
		for range 3 {
			if tok, err := a.Token(ctx, false); err != nil || tok != "token-1" {
				t.Fatalf("Token = %q, %v; want token-1", tok, err)
			}
		}
		if cred.calls != 1 || len(cred.scopes) != 1 || cred.scopes[0] != defaultScope {
			t.Errorf("credential asked %d times for %v, want once for %s", cred.calls, cred.scopes, defaultScope)
		}
	})
	t.Run("a token about to expire is replaced", func(t *testing.T) {
		cred := &fakeCredential{ttl: 4 * time.Minute}
		a := NewAzureToken(cred, "")
		a.Token(ctx, false)
		if tok, _ := a.Token(ctx, false); tok != "token-2" {
			t.Errorf("second token = %q, want a fresh one", tok)
		}
	})
	t.Run("refresh after a 401 asks again", func(t *testing.T) {
		cred := &fakeCredential{ttl: time.Hour}
		a := NewAzureToken(cred, "")
		a.Token(ctx, false)
		if tok, _ := a.Token(ctx, true); tok != "token-2" {
			t.Errorf("refreshed token = %q, want token-2", tok)
		}
	})
	t.Run("a caller waiting behind a fetch that hangs gives up with its ctx", func(t *testing.T) {
		cred := &hangingCredential{started: make(chan struct{})}
		a := NewAzureToken(cred, "")
		hung, stop := context.WithCancel(ctx)
		defer stop()
		go a.Token(hung, false)
		<-cred.started
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { _, err := a.Token(short, false); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v, want the waiting caller's deadline", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the waiting caller was still held 5s after its ctx ended")
		}
	})
	t.Run("errors name the scope", func(t *testing.T) {
		a := NewAzureToken(&fakeCredential{err: errors.New("no identity endpoint")}, "")
		if _, err := a.Token(ctx, false); err == nil || !strings.Contains(err.Error(), defaultScope) {
			t.Errorf("error %v, want one naming the scope", err)
		}
	})
}

func TestAzureCredentialFromEnvironment(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string // start of the description
		kind any
	}{
		{"client secret", map[string]string{"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s3cret"},
			"azure service principal with a client secret (tenant t, client c)", &azidentity.ClientSecretCredential{}},
		{"workload identity", map[string]string{"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"},
			"azure workload identity (tenant t, client c)", &azidentity.WorkloadIdentityCredential{}},
		{"user-assigned managed identity", map[string]string{"AZURE_CLIENT_ID": "c"},
			"azure managed identity (client c)", &azidentity.ManagedIdentityCredential{}},
		{"system-assigned managed identity", nil, "azure managed identity (system-assigned)", &azidentity.ManagedIdentityCredential{}},
	}
	t.Run("secret without tenant", func(t *testing.T) {
		_, _, err := AzureCredential(func(k string) string { return map[string]string{"AZURE_CLIENT_SECRET": "x"}[k] }, AzureOptions{})
		if err == nil || !strings.Contains(err.Error(), "AZURE_TENANT_ID") {
			t.Errorf("error %v, want one naming AZURE_TENANT_ID", err)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cred, desc, err := AzureCredential(func(k string) string { return c.env[k] }, AzureOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if desc != c.want || strings.Contains(desc, "s3cret") {
				t.Errorf("description %q, want %q (and never the secret)", desc, c.want)
			}
			if fmt.Sprintf("%T", cred) != fmt.Sprintf("%T", c.kind) {
				t.Errorf("credential %T, want %T", cred, c.kind)
			}
		})
	}
}

// TestAzureServicePrincipalOnLoopback gets a token with a real client-secret credential from a
// Microsoft Entra ID stand-in on loopback, and calls the API with it.
func TestAzureServicePrincipalOnLoopback(t *testing.T) {
	var mu sync.Mutex
	var forms []url.Values
	entra := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		base := "https://" + r.Host + "/tenant-1"
		switch {
		case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
			json.NewEncoder(w).Encode(map[string]string{
				"token_endpoint":         base + "/oauth2/v2.0/token",
				"authorization_endpoint": base + "/oauth2/v2.0/authorize",
				"issuer":                 base + "/v2.0",
			})
		case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
			r.ParseForm()
			mu.Lock()
			forms = append(forms, r.PostForm)
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "access_token": "entra-token-1", "expires_in": 3600})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(entra.Close)

	env := map[string]string{"AZURE_TENANT_ID": "tenant-1", "AZURE_CLIENT_ID": "client-1", "AZURE_CLIENT_SECRET": "secret-1"}
	cred, _, err := AzureCredential(func(k string) string { return env[k] }, AzureOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: entra.URL + "/"},
			Transport: entra.Client(),
		},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	api := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		if r.Header.Get("Authorization") != "Bearer entra-token-1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	c, err := New(Config{BaseURL: api.URL, Tokens: NewAzureToken(cred, "")})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if acc, err := c.Cancel(context.Background(), CancelRequest{PublisherID: "p", OfferID: "o"}); err != nil || acc.StatusCode != 200 {
			t.Fatalf("Cancel = %+v, %v", acc, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forms) != 1 {
		t.Fatalf("token endpoint called %d times, want once (the token is cached)", len(forms))
	}
	f := forms[0]
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != "client-1" || f.Get("client_secret") != "secret-1" ||
		!slices.Contains(strings.Fields(f.Get("scope")), defaultScope) {
		t.Errorf("token request %v", f)
	}
}
