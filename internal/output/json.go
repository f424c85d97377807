package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The CLI's JSON is the API's messages as protojson writes them with proto
// field names and default values, but for two things that make it read
// like the other outputs and easy to use in scripts: 64-bit integers are
// JSON numbers, not strings ("monthly_amount_micros": 500000000), and enum
// values have the short names the tables and files use ("mode": "enforce",
// not "MODE_ENFORCE"). UnmarshalJSON reads it back.

// EnumName is an enum value as every output of the CLI writes it: its name
// without the enum's prefix, in lower case (Budget.Mode's MODE_ALERT_ONLY is
// alert_only).
func EnumName(v protoreflect.EnumValueDescriptor) string {
	return strings.ToLower(strings.TrimPrefix(string(v.Name()), enumPrefix(v.Parent().(protoreflect.EnumDescriptor))))
}

// enumText is e's EnumName, or its number if it has no name (a value newer
// than this CLI).
func enumText(e protoreflect.Enum) string {
	if v := e.Descriptor().Values().ByNumber(e.Number()); v != nil {
		return EnumName(v)
	}
	return strconv.Itoa(int(e.Number()))
}

// enumPrefix is the prefix every value of an enum carries, as buf's lint
// requires: MODE_ for Mode, ALERT_KIND_ for AlertKind.
func enumPrefix(e protoreflect.EnumDescriptor) string {
	var b strings.Builder
	name := []rune(string(e.Name()))
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) && (unicode.IsLower(name[i-1]) || unicode.IsDigit(name[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String() + "_"
}

// MarshalJSON returns m as the CLI prints it in JSON, compact, its fields in
// the proto's order.
func MarshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	v, err := readJSON(b)
	if err != nil {
		return nil, err
	}
	return encodeJSON(plainMessage(m.ProtoReflect().Descriptor(), v))
}

// UnmarshalJSON reads what MarshalJSON wrote (or protojson) into m.
func UnmarshalJSON(b []byte, m proto.Message) error {
	v, err := readJSON(b)
	if err != nil {
		return err
	}
	b, err = encodeJSON(apiMessage(m.ProtoReflect().Descriptor(), v))
	if err != nil {
		return err
	}
	return protojson.Unmarshal(b, m)
}

// object is a JSON object that keeps its members' order.
type object []member

type member struct {
	key string
	val any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := encodeJSON(m.key)
		if err != nil {
			return nil, err
		}
		v, err := encodeJSON(m.val)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encodeJSON writes v compact, without escaping <, > and & as encoding/json
// does by default (protojson does not either).
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// readJSON decodes one JSON value: objects as object, arrays as []any,
// numbers as json.Number (exact).
func readJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := readValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("json: more than one value")
	}
	return v, nil
}

func readValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := object{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, member{k.(string), v})
		}
		_, err := dec.Token()
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return tok, nil
}

// convert rewrites each scalar of a message's JSON form with f, given the
// field it belongs to; messages, lists and map values are walked.
type convert func(fd protoreflect.FieldDescriptor, v any) any

func (f convert) message(md protoreflect.MessageDescriptor, v any) any {
	o, ok := v.(object)
	if !ok || md.ParentFile().Package() == "google.protobuf" {
		return v // a well-known type: its own JSON form, e.g. a timestamp
	}
	for i := range o {
		fd := md.Fields().ByName(protoreflect.Name(o[i].key))
		if fd == nil {
			fd = md.Fields().ByJSONName(o[i].key)
		}
		if fd == nil {
			continue
		}
		switch {
		case fd.IsList():
			if a, ok := o[i].val.([]any); ok {
				for j := range a {
					a[j] = f.single(fd, a[j])
				}
			}
		case fd.IsMap():
			if m, ok := o[i].val.(object); ok {
				for j := range m {
					m[j].val = f.single(fd.MapValue(), m[j].val)
				}
			}
		default:
			o[i].val = f.single(fd, o[i].val)
		}
	}
	return o
}

func (f convert) single(fd protoreflect.FieldDescriptor, v any) any {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return f.message(fd.Message(), v)
	}
	return f(fd, v)
}

// plainMessage turns protojson's form of a message into the CLI's.
func plainMessage(md protoreflect.MessageDescriptor, v any) any {
	return convert(func(fd protoreflect.FieldDescriptor, v any) any {
		s, ok := v.(string)
		if !ok {
			return v
		}
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
			protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			return json.Number(s)
		case protoreflect.EnumKind:
			if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
				return EnumName(ev)
			}
		}
		return v
	}).message(md, v)
}

// apiMessage turns the CLI's form of a message back into protojson's:
// short enum names become the values' names (numbers read as they are).
func apiMessage(md protoreflect.MessageDescriptor, v any) any {
	return convert(func(fd protoreflect.FieldDescriptor, v any) any {
		s, ok := v.(string)
		if !ok || fd.Kind() != protoreflect.EnumKind {
			return v
		}
		values := fd.Enum().Values()
		for i := range values.Len() {
			if EnumName(values.Get(i)) == s {
				return string(values.Get(i).Name())
			}
		}
		return v
	}).message(md, v)
}
