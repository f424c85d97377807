package files

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/rules"
)

func TestLoadRules(t *testing.T) {
	glob := func(r rules.Rule) rules.Rule { return r.Normalize() }
	for _, tc := range []struct {
		name string
		file string
		want []rules.Rule
	}{
		{
			name: "omitted fields",
			file: "rules:\n  - name: a\n    priority: 3\n",
			want: []rules.Rule{glob(rules.Rule{Name: "a", Priority: 3})},
		},
		{
			name: "empty list",
			file: "rules: []\n",
		},
		{
			name: "null list",
			file: "rules:\n",
		},
		{
			name: "anchors and merge keys",
			file: `rules:
  - &base
    name: a
    priority: 1
    fixed_rate: 0.25
    labels: {team: x}
  - <<: *base
    name: b
    priority: 2
`,
			want: []rules.Rule{
				glob(rules.Rule{Name: "a", Priority: 1, FixedRate: 0.25, Labels: map[string]string{"team": "x"}}),
				glob(rules.Rule{Name: "b", Priority: 2, FixedRate: 0.25, Labels: map[string]string{"team": "x"}}),
			},
		},
		{
			name: "numbers as text",
			file: "rules:\n  - {name: 404, priority: 1, http_method: 123, attributes: {code: 200}, labels: {n: 1.5}}\n",
			want: []rules.Rule{glob(rules.Rule{Name: "404", Priority: 1, HTTPMethod: "123",
				Attributes: map[string]string{"code": "200"}, Labels: map[string]string{"n": "1.5"}})},
		},
		{
			name: "whole numbers written as floats or in hex",
			file: "rules:\n  - {name: a, priority: 2.0, reservoir_size: 1e3}\n  - {name: b, priority: 0x10}\n",
			want: []rules.Rule{glob(rules.Rule{Name: "a", Priority: 2, ReservoirSize: 1000}), glob(rules.Rule{Name: "b", Priority: 16})},
		},
		{
			name: "Default with its fixed priority and globs",
			file: "rules:\n  - {name: Default, priority: 10000, fixed_rate: 0.1, service_name: '*'}\n",
			want: []rules.Rule{glob(rules.Rule{Name: "Default", FixedRate: 0.1})},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := LoadRules("f.yaml", []byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var got []rules.Rule
			for _, e := range entries {
				got = append(got, e.Rule)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("loadRules =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestLoadRulesProblems(t *testing.T) {
	_, err := LoadRules("f.yaml", []byte("rules:\n  - name: a\n    priority: 99999999999\n    Fixed_Rate: 1\n    url_path: [x]\n"))
	var ife *Error
	if !errors.As(err, &ife) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	want := []string{
		`f.yaml:3: rule "a" (#1): priority: 99999999999 is out of range`,
		`f.yaml:4: rule "a" (#1): Fixed_Rate: unknown field; did you mean "fixed_rate"?`,
		`f.yaml:5: rule "a" (#1): url_path: want text, got a list`,
	}
	if !reflect.DeepEqual(ife.Problems, want) {
		t.Errorf("problems:\n%q\nwant\n%q", ife.Problems, want)
	}
}

// The printed form reads back as the same rules, and leaves out what the
// file means by omission.
func TestRulesFileRoundTrip(t *testing.T) {
	in := []rules.Rule{
		rules.Default(),
		{Name: "a", Priority: 7, FixedRate: 1e-05, ReservoirSize: 1_000_000, ServiceName: "*", ServiceType: "AWS::EC2::Instance",
			Host: "*.example.com", HTTPMethod: "GET", URLPath: "*", ResourceARN: "arn:aws:*",
			Attributes: map[string]string{"yes": "no", "n": "007", "colon": "a: b"}, Description: "line one\nline two",
			Labels: map[string]string{"team": "true", "x/y": ""}, ExpireTime: time.Date(2026, 3, 1, 12, 30, 0, 5, time.UTC)},
	}
	var ps []*pb.Rule
	for i := range in {
		ps = append(ps, apiconv.RuleToProto(&in[i]))
	}
	var buf bytes.Buffer
	if err := WriteRules(&buf, ps); err != nil {
		t.Fatal(err)
	}
	entries, err := LoadRules("out.yaml", buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if len(entries) != len(in) {
		t.Fatalf("read %d rules back, want %d:\n%s", len(entries), len(in), buf.String())
	}
	for i, e := range entries {
		if diff := cmp.Diff(in[i].Normalize(), e.Rule, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("rule %d read back (-want +got):\n%s\n%s", i, diff, buf.String())
		}
	}
	if bytes.Contains(buf.Bytes(), []byte("url_path")) || bytes.Contains(buf.Bytes(), []byte("priority: 10000")) {
		t.Errorf("printed globs that match anything or the Default's fixed priority:\n%s", buf.String())
	}
}
