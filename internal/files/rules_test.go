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
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
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
			name: "tags and a boost",
			file: "rules:\n  - name: a\n    priority: 1\n    tags: {Stage: prod, empty: }\n    sampling_rate_boost:\n      max_rate: 0.5\n      cooldown_window_minutes: 10\n",
			want: []rules.Rule{glob(rules.Rule{Name: "a", Priority: 1, Tags: map[string]string{"Stage": "prod", "empty": ""},
				Boost: &rules.RateBoost{MaxRate: 0.5, Cooldown: 10 * time.Minute}})},
		},
		{
			name: "boost null is none, an empty one is zero",
			file: "rules:\n  - {name: a, priority: 1, sampling_rate_boost: null}\n  - {name: b, priority: 1, sampling_rate_boost: {}}\n",
			want: []rules.Rule{glob(rules.Rule{Name: "a", Priority: 1}), glob(rules.Rule{Name: "b", Priority: 1, Boost: &rules.RateBoost{}})},
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

// Problems of tags and boosts are found on the lines they are on, by the
// loader (shape) and by rules.Validate (limits).
func TestLoadRulesTagAndBoostProblems(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"boost not a mapping", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost: 0.5\n",
			[]string{`f.yaml:4: rule "a" (#1): sampling_rate_boost: want a mapping of max_rate and cooldown_window_minutes, got "0.5"`}},
		{"boost unknown field", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost:\n      max_rate: 0.5\n      cooldown: 10\n",
			[]string{`f.yaml:6: rule "a" (#1): sampling_rate_boost: cooldown: unknown field; a sampling_rate_boost has max_rate, cooldown_window_minutes`}},
		{"boost misspelt field", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost:\n      max_rat: 0.5\n",
			[]string{`f.yaml:5: rule "a" (#1): sampling_rate_boost: max_rat: unknown field; did you mean "max_rate"?`}},
		{"boost field twice", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost:\n      max_rate: 0.5\n      max_rate: 0.6\n",
			[]string{`f.yaml:6: rule "a" (#1): sampling_rate_boost: max_rate: given twice (first at line 5)`}},
		{"boost cooldown not whole", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost:\n      cooldown_window_minutes: 1.5\n",
			[]string{`f.yaml:5: rule "a" (#1): sampling_rate_boost: cooldown_window_minutes: want a whole number, got "1.5"`}},
		{"boost out of range", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost:\n      max_rate: 2\n      cooldown_window_minutes: 1441\n",
			[]string{
				`f.yaml:5: rule "a" (#1): sampling_rate_boost.max_rate: must be between 0 and 1, got 2`,
				`f.yaml:6: rule "a" (#1): sampling_rate_boost.cooldown_window_minutes: must be whole minutes between 0 and 1440, got 1441`,
			}},
		{"boost cooldown past int32", "rules:\n  - name: a\n    priority: 1\n    sampling_rate_boost: {cooldown_window_minutes: 99999999999999}\n",
			[]string{`f.yaml:4: rule "a" (#1): sampling_rate_boost: cooldown_window_minutes: 99999999999999 is out of range`}},
		{"boost on Default", "rules:\n  - name: Default\n    sampling_rate_boost: {max_rate: 1}\n",
			[]string{`f.yaml:2: rule "Default" (#1): the Default rule can be re-rated but not deleted, renamed or narrowed (cannot change sampling_rate_boost)`}},
		{"tag key reserved", "rules:\n  - name: a\n    priority: 1\n    tags:\n      Stage: prod\n      aws:x: y\n",
			[]string{`f.yaml:6: rule "a" (#1): tags.aws:x: the tag key prefix aws: is reserved`}},
		{"tags not a mapping", "rules:\n  - name: a\n    priority: 1\n    tags: [a]\n",
			[]string{`f.yaml:4: rule "a" (#1): tags: want a mapping of key: value, got a list`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadRules("f.yaml", []byte(tc.file))
			var ife *Error
			if !errors.As(err, &ife) {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if diff := cmp.Diff(tc.want, ife.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
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
			Labels: map[string]string{"team": "true", "x/y": ""}, ExpireTime: time.Date(2026, 3, 1, 12, 30, 0, 5, time.UTC),
			Tags: map[string]string{"Stage": "prod", "Owner": "", "1": "2"}, Boost: &rules.RateBoost{MaxRate: 0.5, Cooldown: time.Hour}},
		{Name: "b", Priority: 8, Boost: &rules.RateBoost{}},
	}
	var ps []*pb.Rule
	for i := range in {
		ps = append(ps, rulepb.ToProto(&in[i]))
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
