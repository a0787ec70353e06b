package cloudpartner

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// startClientSpan starts the HTTP CLIENT span of one exchange, named by its method as the HTTP
// semantic conventions ask. url.full leaves out the query: the only one cpcancel builds is
// api-version, and a Location's query is the API's to fill. Headers are never recorded, so
// neither is the token.
func startClientSpan(ctx context.Context, t trace.Tracer, req *http.Request, operation string, resends int) (context.Context, trace.Span) {
	u := *req.URL
	u.RawQuery, u.Fragment, u.User = "", "", nil
	port := u.Port()
	if port == "" {
		port = effectivePort(&u)
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs,
		attribute.String("http.request.method", req.Method),
		attribute.String("url.full", u.String()),
		attribute.String("server.address", u.Hostname()),
		attribute.String("cpcancel.api.operation", operation),
	)
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, attribute.Int("server.port", p))
	}
	if n, ok := ctx.Value(attemptKey{}).(int); ok {
		attrs = append(attrs, attribute.Int("cpcancel.attempt", n))
	}
	if resends > 0 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", resends))
	}
	return t.Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// attemptKey carries CancelRequest.Attempt to the span of each exchange.
type attemptKey struct{}

// endClientSpan records the response's status, or the error code when none came, and ends span.
func endClientSpan(span trace.Span, status int, errCode string) {
	switch {
	case status != 0:
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 400 {
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
	default:
		span.SetAttributes(attribute.String("error.type", errCode))
		span.SetStatus(codes.Error, errCode)
	}
	span.End()
}
