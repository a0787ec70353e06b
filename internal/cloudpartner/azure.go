package cloudpartner

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cpcancel/cpcancel/internal/config"
)

// defaultScope is the OAuth scope of the Cloud Partner Portal API: the default of
// CPCANCEL_CLOUDPARTNER_SCOPE.
var defaultScope = config.Default().CloudPartner.Scope

// refreshBefore is how long before its expiry a cached Azure token is replaced.
const refreshBefore = 5 * time.Minute

// AzureOptions tune how Azure credentials reach Microsoft Entra ID; the zero value is right for
// Azure's public cloud. Tests point them at a token endpoint on loopback.
type AzureOptions struct {
	ClientOptions            azcore.ClientOptions
	DisableInstanceDiscovery bool
}

// AzureCredential picks an Azure credential from the environment, the usual way: a service
// principal when AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH (with its optional
// AZURE_CLIENT_CERTIFICATE_PASSWORD) is set, with AZURE_TENANT_ID and AZURE_CLIENT_ID; Kubernetes
// workload identity when AZURE_FEDERATED_TOKEN_FILE is set; otherwise a managed identity
// (user-assigned when AZURE_CLIENT_ID is set). It also says which one, for the start-up log;
// never a secret. Errors name the variables at fault.
func AzureCredential(getenv func(string) string, opts AzureOptions) (azcore.TokenCredential, string, error) {
	tenant, client := getenv("AZURE_TENANT_ID"), getenv("AZURE_CLIENT_ID")
	who := fmt.Sprintf("(tenant %s, client %s)", tenant, client)
	needIDs := func(what string) error {
		if tenant == "" || client == "" {
			return fmt.Errorf("%s needs AZURE_TENANT_ID and AZURE_CLIENT_ID", what)
		}
		return nil
	}
	switch {
	case getenv("AZURE_CLIENT_SECRET") != "":
		if err := needIDs("AZURE_CLIENT_SECRET"); err != nil {
			return nil, "", err
		}
		cred, err := azidentity.NewClientSecretCredential(tenant, client, getenv("AZURE_CLIENT_SECRET"),
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts.ClientOptions, DisableInstanceDiscovery: opts.DisableInstanceDiscovery})
		if err != nil {
			return nil, "", fmt.Errorf("azure client secret credential: %w", err)
		}
		return cred, "azure service principal with a client secret " + who, nil
	case getenv("AZURE_CLIENT_CERTIFICATE_PATH") != "":
		path := getenv("AZURE_CLIENT_CERTIFICATE_PATH")
		if err := needIDs("AZURE_CLIENT_CERTIFICATE_PATH"); err != nil {
			return nil, "", err
		}
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH: %w", err)
		}
		certs, key, err := azidentity.ParseCertificates(pem, []byte(getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD")))
		if err != nil {
			return nil, "", fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH %s: %w", path, err)
		}
		cred, err := azidentity.NewClientCertificateCredential(tenant, client, certs, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts.ClientOptions, DisableInstanceDiscovery: opts.DisableInstanceDiscovery})
		if err != nil {
			return nil, "", fmt.Errorf("azure client certificate credential: %w", err)
		}
		return cred, "azure service principal with a client certificate " + who, nil
	case getenv("AZURE_FEDERATED_TOKEN_FILE") != "":
		if err := needIDs("AZURE_FEDERATED_TOKEN_FILE"); err != nil {
			return nil, "", err
		}
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: opts.ClientOptions, DisableInstanceDiscovery: opts.DisableInstanceDiscovery,
			TenantID: tenant, ClientID: client, TokenFilePath: getenv("AZURE_FEDERATED_TOKEN_FILE"),
		})
		if err != nil {
			return nil, "", fmt.Errorf("azure workload identity (AZURE_FEDERATED_TOKEN_FILE): %w", err)
		}
		return cred, "azure workload identity " + who, nil
	}
	mi := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts.ClientOptions}
	kind := "azure managed identity (system-assigned)"
	if client != "" {
		mi.ID = azidentity.ClientID(client)
		kind = "azure managed identity (client " + client + ")"
	}
	cred, err := azidentity.NewManagedIdentityCredential(mi)
	if err != nil {
		return nil, "", fmt.Errorf("azure managed identity: %w", err)
	}
	return cred, kind, nil
}

// AzureToken supplies tokens from an Azure credential for one scope, cached and replaced five
// minutes before they expire; a refresh (after a 401) asks the credential again at once. Safe for
// concurrent use: one caller fetches while the others wait for its token, each no longer than its
// own ctx allows.
type AzureToken struct {
	cred  azcore.TokenCredential
	scope string

	// turn is held (one value in it) by the caller reading or fetching the token; a channel, not
	// a mutex, so that a caller waiting behind a fetch that hangs gives up when its ctx is done.
	turn  chan struct{}
	token azcore.AccessToken // guarded by turn
}

var _ TokenSource = (*AzureToken)(nil)

// NewAzureToken returns a TokenSource for scope; empty means the Cloud Partner Portal API's
// (defaultScope).
func NewAzureToken(cred azcore.TokenCredential, scope string) *AzureToken {
	if scope == "" {
		scope = defaultScope
	}
	return &AzureToken{cred: cred, scope: scope, turn: make(chan struct{}, 1)}
}

// Token returns a token valid for at least five more minutes, fetching one when needed.
func (a *AzureToken) Token(ctx context.Context, refresh bool) (string, error) {
	select {
	case a.turn <- struct{}{}:
		defer func() { <-a.turn }()
	case <-ctx.Done():
		return "", fmt.Errorf("azure token for %s: waiting for another caller's fetch: %w", a.scope, ctx.Err())
	}
	if !refresh && a.token.Token != "" && time.Until(a.token.ExpiresOn) > refreshBefore {
		return a.token.Token, nil
	}
	tok, err := a.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{a.scope}})
	if err != nil {
		return "", fmt.Errorf("azure token for %s: %w", a.scope, err)
	}
	a.token = tok
	return tok.Token, nil
}
