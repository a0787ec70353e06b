// Package natsce carries CloudEvents over NATS messages, following the CloudEvents NATS protocol
// binding, through sdk-go's binding package.
//
// Reading is lenient, because producers are: attribute headers are matched case-insensitively
// (`ce-id`, `Ce-Id`, `CE-ID`), their values are percent-decoded, both `Content-Type` spellings are
// honoured, and a message without a `ce-specversion` header is read as a structured JSON event
// even when it carries no content type (sdk-go's NATS sender sets none). Invalid UTF-8 in an
// attribute or in a structured body is rejected.
//
// Writing is strict: binary mode uses lowercase `ce-` headers and percent-encodes only what the
// binding requires (space, `"`, `%` and bytes outside printable ASCII), so a `/` stays a `/`.
package natsce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

const (
	headerPrefix      = "ce-"
	contentTypeHeader = "Content-Type"
)

var versions = spec.WithPrefix(headerPrefix)

// message is a NATS message (headers and body) read as a binding.Message. It may be read more
// than once; Finish does nothing, acknowledgement is the caller's business.
type message struct {
	header   nats.Header
	body     []byte
	encoding binding.Encoding
	version  spec.Version // binary mode only
	err      error        // why the message cannot be read, found by newMessage
}

var (
	_ binding.Message               = (*message)(nil)
	_ binding.MessageMetadataReader = (*message)(nil)
)

// newMessage wraps header and body without copying them; neither may change while it is read.
func newMessage(header nats.Header, body []byte) *message {
	m := &message{header: header, body: body, encoding: binding.EncodingUnknown}
	if v, ok, err := m.lookup(versions.PrefixedSpecVersionName()); err != nil {
		m.err = err
	} else if ok {
		m.encoding = binding.EncodingBinary
		if m.version = versions.Version(v); m.version == nil {
			m.err = fmt.Errorf("unsupported specversion %q", v)
		}
		return m
	}
	ct, _, err := m.lookup(contentTypeHeader)
	if err != nil {
		m.err = err
	}
	switch {
	case ct == "" && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")):
		m.encoding = binding.EncodingStructured
	case ct != "" && format.Lookup(ct) == format.JSON:
		m.encoding = binding.EncodingStructured
	}
	return m
}

// lookup returns the percent-decoded value of the header named name in any letter case.
// Two spellings of one header are an error: which one wins would be a guess.
func (m *message) lookup(name string) (value string, found bool, err error) {
	for k, vs := range m.header {
		if !strings.EqualFold(k, name) || len(vs) == 0 {
			continue
		}
		if found {
			return "", false, fmt.Errorf("header %q given twice", name)
		}
		if value, err = decodeValue(vs[0]); err != nil {
			return "", false, fmt.Errorf("header %q: %w", k, err)
		}
		found = true
	}
	return value, found, nil
}

// ReadEncoding reports binary, structured or unknown (not a CloudEvent).
func (m *message) ReadEncoding() binding.Encoding { return m.encoding }

// ReadStructured hands a structured JSON event to w.
func (m *message) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	if m.encoding != binding.EncodingStructured {
		return binding.ErrNotStructured
	}
	if m.err != nil {
		return m.err
	}
	if !utf8.Valid(m.body) {
		return errors.New("structured event is not valid UTF-8")
	}
	return w.SetStructuredEvent(ctx, format.JSON, bytes.NewReader(m.body))
}

// ReadBinary hands the attributes of a binary-mode event and its data to w.
func (m *message) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if m.encoding != binding.EncodingBinary {
		return binding.ErrNotBinary
	}
	if m.err != nil {
		return m.err
	}
	// The attributes seen so far: a handful, so a slice on the stack beats a map.
	var seenBuf [16]string
	seen := seenBuf[:0]
	var contentType string
	for k, vs := range m.header {
		lk := strings.ToLower(k)
		if len(vs) == 0 {
			continue
		}
		if lk == strings.ToLower(contentTypeHeader) {
			if contentType != "" {
				return fmt.Errorf("header %q given twice", contentTypeHeader)
			}
			contentType = k
			continue
		}
		name, ok := strings.CutPrefix(lk, headerPrefix)
		if !ok {
			continue
		}
		if slices.Contains(seen, name) {
			return fmt.Errorf("header %q given twice", k)
		}
		seen = append(seen, name)
		value, err := decodeValue(vs[0])
		if err != nil {
			return fmt.Errorf("header %q: %w", k, err)
		}
		if attr := m.version.Attribute(lk); attr != nil {
			err = w.SetAttribute(attr, value)
		} else {
			err = w.SetExtension(name, value)
		}
		if err != nil {
			return fmt.Errorf("header %q: %w", k, err)
		}
	}
	if contentType != "" && !slices.Contains(seen, "datacontenttype") {
		value, err := decodeValue(m.header[contentType][0])
		if err != nil {
			return fmt.Errorf("header %q: %w", contentType, err)
		}
		if err := w.SetAttribute(m.version.AttributeFromKind(spec.DataContentType), value); err != nil {
			return err
		}
	}
	if len(m.body) > 0 {
		return w.SetData(bytes.NewReader(m.body))
	}
	return nil
}

// GetAttribute returns a binary-mode attribute's decoded value, or nil.
func (m *message) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	if m.version == nil {
		return nil, nil
	}
	attr := m.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if v, ok, err := m.lookup(attr.PrefixedName()); err == nil && ok {
		return attr, v
	}
	return attr, nil
}

// GetExtension returns a binary-mode extension's decoded value, or nil.
func (m *message) GetExtension(name string) any {
	if v, ok, err := m.lookup(headerPrefix + name); err == nil && ok {
		return v
	}
	return nil
}

// Finish does nothing: the caller acknowledges the NATS message itself.
func (m *message) Finish(error) error { return nil }

// Decode reads a CloudEvent from a NATS message in either content mode and validates it. Every
// error says "not a CloudEvent: " and why.
func Decode(ctx context.Context, header nats.Header, body []byte) (*event.Event, error) {
	m := newMessage(header, body)
	if m.encoding == binding.EncodingUnknown {
		if m.err != nil {
			return nil, fmt.Errorf("not a CloudEvent: %w", m.err)
		}
		return nil, errors.New("not a CloudEvent: no ce-specversion header and no JSON event body")
	}
	ev, err := binding.ToEvent(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("not a CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("not a CloudEvent: %w", err)
	}
	return ev, nil
}

// decodeValue percent-decodes a header value and insists on UTF-8. `+` stays `+`. A value that is
// not valid percent-encoding is taken as it is: sdk-go's NATS sender, for one, does not encode.
func decodeValue(s string) (string, error) {
	if strings.IndexByte(s, '%') >= 0 {
		if d, err := url.PathUnescape(s); err == nil {
			s = d
		}
	}
	if !utf8.ValidString(s) {
		return "", errors.New("value is not valid UTF-8")
	}
	return s, nil
}
