package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Read reads the configuration through lookup without validating it, for callers that adjust the
// result first. lookup is os.LookupEnv in the service and a map in tests; it must tell a variable
// set to the empty string, which overrides the default, from one that is not set.
//
// Values are read as envconfig reads them (TestReadAsEnvconfig), but envconfig.Process reads only
// the process environment, so Read walks the tags itself. Tags hold full variable names and no
// prefix applies: envconfig with a prefix would fall back to the bare tag (LOG_LEVEL for
// CPCANCEL_LOG_LEVEL) and read other programs' settings, and for a group it would look for
// the group's name before the tag first (NATS_CPCANCEL_NATS_URL). NATS_URL is the one shared
// variable docs/contract.md §5 asks for.
func Read(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	if err := read(lookup, &c); err != nil {
		return Config{}, err
	}
	c.NATS.readURL(lookup)
	return c, nil
}

// ReadNATS reads the NATS group alone, for commands that connect to cpcancel's NATS without
// being cpcancel (consumer publish): other groups' variables may be unset or invalid there.
func ReadNATS(lookup func(string) (string, bool)) (NATS, error) {
	var n NATS
	if err := read(lookup, &n); err != nil {
		return NATS{}, err
	}
	n.readURL(lookup)
	return n, nil
}

// readURL falls back on NATS_URL when CPCANCEL_NATS_URL is not set.
func (n *NATS) readURL(lookup func(string) (string, bool)) {
	if _, set := lookup("CPCANCEL_NATS_URL"); !set {
		n.URL, _ = lookup("NATS_URL")
	}
}

// Default is the configuration when no variable is set: every field at its tag's default.
func Default() Config { return defaults() }

var defaults = sync.OnceValue(func() Config {
	c, err := Read(func(string) (string, bool) { return "", false })
	if err != nil {
		panic("config: a default tag does not parse: " + err.Error())
	}
	return c
})

// Variable is one environment variable cpcancel reads, as its field's tags describe it.
type Variable struct {
	Name        string // e.g. CPCANCEL_FOLLOW_INTERVAL
	Default     string // empty when it has none
	Description string
}

// Group is the variables of one group of Config, in the order of its fields.
type Group struct {
	Name        string // the group's field in Config, e.g. Follow
	Description string
	Variables   []Variable
}

// Groups describes every variable, in the order of Config's groups.
func Groups() []Group {
	var groups []Group
	t := reflect.TypeFor[Config]()
	for g := range t.Fields() {
		group := Group{Name: g.Name, Description: g.Tag.Get("desc")}
		for _, s := range settings(reflect.New(g.Type).Elem()) {
			group.Variables = append(group.Variables, Variable{
				Name: s.name(), Default: s.field.Tag.Get("default"), Description: s.field.Tag.Get("desc"),
			})
		}
		groups = append(groups, group)
	}
	return groups
}

// Variables lists every variable, in the order of Groups.
func Variables() []Variable {
	var vars []Variable
	for _, g := range Groups() {
		vars = append(vars, g.Variables...)
	}
	return vars
}

// Usage writes every variable with its default and description, for `consumer -h`.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	// envconfig names a variable of a group after the group and the tag (NATS_CPCANCEL_NATS_URL,
	// see Read); .Alt is the tag alone, the name cpcancel reads.
	const format = "VARIABLE\tDEFAULT\tDESCRIPTION\n" +
		`{{range .}}{{.Alt}}{{"\t"}}{{usage_default .}}{{"\t"}}{{usage_description .}}{{"\n"}}{{end}}`
	if err := envconfig.Usagef("", &Config{}, tw, format); err != nil {
		return err
	}
	return tw.Flush()
}

// setting is one variable: the field that holds it.
type setting struct {
	field reflect.StructField
	value reflect.Value // settable
}

func (s setting) name() string { return s.field.Tag.Get("envconfig") }

// settings lists the variables of the struct v, in the order of its fields, those of groups
// (fields that are structs) in their place.
func settings(v reflect.Value) []setting {
	var out []setting
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, settings(v.Field(i))...)
			continue
		}
		if f.Tag.Get("envconfig") == "" {
			panic("config: field " + f.Name + " has no envconfig tag")
		}
		out = append(out, setting{field: f, value: v.Field(i)})
	}
	return out
}

// read sets the fields of the struct p points to from lookup, or else from their defaults. As
// envconfig does, it stops at the first value that does not parse.
func read(lookup func(string) (string, bool), p any) error {
	for _, s := range settings(reflect.ValueOf(p).Elem()) {
		value, set := lookup(s.name())
		if def := s.field.Tag.Get("default"); !set && def != "" {
			value, set = def, true
		}
		if !set {
			continue // the zero value
		}
		if err := parse(value, s.value); err != nil {
			return fmt.Errorf("%s: invalid value %q: want %s", s.name(), value, s.value.Type())
		}
	}
	return nil
}

// parse sets v from s by the rules of envconfig's processField for the kinds Config uses.
func parse(s string, v reflect.Value) error {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(s)
		v.SetInt(int64(d))
		return err
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		v.SetBool(b)
		return err
	case v.CanInt():
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		v.SetInt(n)
		return err
	case v.CanFloat():
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		v.SetFloat(f)
		return err
	default:
		panic("config: no parser for " + v.Type().String())
	}
	return nil
}
