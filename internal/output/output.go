// Package output prints what the CLI shows: tables for people, JSON for
// programs, and YAML (for rules and budgets the file format the CLI reads
// back).
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
)

// Formats of -o.
const (
	Table = "table"
	Wide  = "wide" // a table with every column; rules only
	JSON  = "json"
	YAML  = "yaml"
)

// Check refuses a format that is not table, json, yaml or one of more.
func Check(f string, more ...string) error {
	switch f {
	case Table, JSON, YAML:
		return nil
	}
	if slices.Contains(more, f) {
		return nil
	}
	want := "table, json or yaml"
	if len(more) > 0 {
		want = "table, " + strings.Join(more, ", ") + ", json or yaml"
	}
	return fmt.Errorf("-o: want %s, got %q", want, f)
}

// WriteJSON prints m as indented JSON (see MarshalJSON).
func WriteJSON(w io.Writer, m proto.Message) error {
	b, err := MarshalJSON(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

func writeIndented(w io.Writer, b []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// WriteJSONList prints {"key": [messages...]}: the shape of a List response
// without its paging fields, which mean nothing once every page is read.
func WriteJSONList[M proto.Message](w io.Writer, key string, ms []M) error {
	b, err := JSONList(key, ms)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

func JSONList[M proto.Message](key string, ms []M) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{%q:[", key)
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		mb, err := MarshalJSON(m)
		if err != nil {
			return nil, err
		}
		b.Write(mb)
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

func FormatRate(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// WriteYAML prints JSON as YAML, for outputs that are not a file the
// CLI reads back.
func WriteYAML(w io.Writer, b []byte) error {
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}
