package natsce

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// Mode is a CloudEvents content mode.
type Mode int

const (
	// Binary puts attributes in ce- headers and the data in the body.
	Binary Mode = iota
	// Structured puts the whole event in the body as application/cloudevents+json.
	Structured
)

// ParseMode reads "binary" or "structured".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "binary":
		return Binary, nil
	case "structured":
		return Structured, nil
	}
	return 0, fmt.Errorf("unknown content mode %q: want binary or structured", s)
}

func (m Mode) String() string {
	if m == Structured {
		return "structured"
	}
	return "binary"
}

// Encode writes ev as the header and body of a NATS message in the given mode.
func Encode(ctx context.Context, ev *event.Event, mode Mode) (nats.Header, []byte, error) {
	w := &writer{header: nats.Header{}}
	if mode == Structured {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	if _, err := binding.Write(ctx, binding.ToMessage(ev), w, w); err != nil {
		return nil, nil, fmt.Errorf("encode event: %w", err)
	}
	return w.header, w.body, nil
}

// MarshalStructured returns ev in the JSON event format, as ev.MarshalJSON does, written into a
// buffer sized for it up front: MarshalJSON grows one from empty, which costs a third more memory.
func MarshalStructured(ev *event.Event) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(ev.Data()) + 512) // attributes take ~300 bytes; longer ones grow it once
	if err := event.WriteJson(ev, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NewMsg encodes ev in the given mode as a message for subject.
func NewMsg(ctx context.Context, subject string, ev *event.Event, mode Mode) (*nats.Msg, error) {
	hdr, body, err := Encode(ctx, ev, mode)
	if err != nil {
		return nil, err
	}
	return &nats.Msg{Subject: subject, Header: hdr, Data: body}, nil
}

// StructuredMsg is a structured-mode message for subject whose body is an event already encoded
// by MarshalStructured: what NewMsg makes in that mode, without encoding the event again.
func StructuredMsg(subject string, body []byte) *nats.Msg {
	return &nats.Msg{Subject: subject, Header: nats.Header{contentTypeHeader: {format.JSON.MediaType()}}, Data: body}
}

// writer is both the structured and the binary writer of one NATS message.
type writer struct {
	header nats.Header
	body   []byte
}

var (
	_ binding.StructuredWriter = (*writer)(nil)
	_ binding.BinaryWriter     = (*writer)(nil)
)

func (w *writer) SetStructuredEvent(_ context.Context, f format.Format, ev io.Reader) (err error) {
	w.header[contentTypeHeader] = []string{f.MediaType()}
	w.body, err = readAll(ev)
	return err
}

func (w *writer) Start(context.Context) error { return nil }
func (w *writer) End(context.Context) error   { return nil }

func (w *writer) SetData(data io.Reader) (err error) {
	w.body, err = readAll(data)
	return err
}

// readAll reads r into a slice of exactly its size when r knows it, as sdk-go's *bytes.Reader does.
func readAll(r io.Reader) ([]byte, error) {
	if l, ok := r.(interface{ Len() int }); ok {
		b := make([]byte, l.Len())
		_, err := io.ReadFull(r, b)
		return b, err
	}
	return io.ReadAll(r)
}

func (w *writer) SetAttribute(attr spec.Attribute, value any) error {
	if value == nil {
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	if attr.Kind() == spec.DataContentType {
		w.header[contentTypeHeader] = []string{s}
	}
	w.header[headerPrefix+attr.Name()] = []string{encodeValue(s)}
	return nil
}

func (w *writer) SetExtension(name string, value any) error {
	if value == nil {
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.header[headerPrefix+strings.ToLower(name)] = []string{encodeValue(s)}
	return nil
}

// encodeValue percent-encodes space, '"', '%' and every byte outside printable ASCII, and
// nothing else, as the binding requires.
func encodeValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if mustEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xF])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func mustEscape(c byte) bool { return c <= ' ' || c == '"' || c == '%' || c >= 0x7F }
