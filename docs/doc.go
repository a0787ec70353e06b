// Package docs holds cpcancel's event API as documents: the AsyncAPI description asyncapi.yaml
// and the JSON Schemas of the event data in schemas/. It has no code; its tests keep the
// documents true to the service (see also internal/service/schema_test.go).
package docs
