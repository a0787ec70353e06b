// Package cloudpartner calls the Azure Cloud Partner Portal (CPP) "Cancel operation" API and
// decides, once and for all, whether a failed call is worth retrying.
//
// Everything that must know the API's wire format lives here: the request path and body, the
// Location and error-body parsing, token handling, and the transient/permanent split that the
// rest of cpcancel reads with errors.As.
package cloudpartner
