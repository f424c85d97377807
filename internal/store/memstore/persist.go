package memstore

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Files in Options.DataDir.
const (
	stateFile = "rules.json"
	usageFile = "usage.json"
	lockFile  = "rules.lock"
)

// fileFormat is the version of the state file's layout. Fields added since
// are optional, so files without them still load.
const fileFormat = 1

// fileState is the state file: everything but usage and states, rewritten
// on every edit.
type fileState struct {
	Format  int           `json:"format"`
	Version int64         `json:"version"`
	LastSeq int64         `json:"last_seq"`
	Rules   []record.Rule `json:"rules"`
	Events  []fileEvent   `json:"events"` // oldest first

	Budgets  []json.RawMessage    `json:"budgets,omitempty"` // record.Budget, by name
	AlertSeq int64                `json:"alert_seq,omitempty"`
	Alerts   []fileAlert          `json:"alerts,omitempty"` // oldest first
	Fired    map[string]time.Time `json:"fired,omitempty"`  // DedupKey → mark kept until

	Tokens        []record.Token `json:"tokens,omitempty"` // by name
	TokensVersion int64          `json:"tokens_version,omitempty"`
}

type fileAlert struct {
	Seq int64 `json:"seq"`
	record.Alert
}

// fileUsage is one budget's month; the hour arrays stop at the last hour
// with counts.
type fileUsage struct {
	Budget   string                      `json:"budget"`
	Month    string                      `json:"month"` // budget.MonthKey
	Requests []int64                     `json:"requests"`
	Sampled  []int64                     `json:"sampled"`
	Rules    map[string]record.RuleUsage `json:"rules,omitempty"`
	// RuleHours are each rule's requests per hour; RuleSampled its sampled
	// per hour and Services its month per service, for the fleet only.
	RuleHours   map[string][]int64                     `json:"rule_hours,omitempty"`
	RuleSampled map[string][]int64                     `json:"rule_sampled,omitempty"`
	Services    map[string]map[string]record.RuleUsage `json:"services,omitempty"`
}

// fileHistory is one budget's month of hourly decisions.
type fileHistory struct {
	Budget string         `json:"budget"`
	Month  string         `json:"month"` // budget.MonthKey
	Points []record.Point `json:"points"`
}

// fileLive is the usage file: budget usage and states, rewritten by the
// flusher.
type fileLive struct {
	Format  int            `json:"format"`
	Usage   []fileUsage    `json:"usage"`
	States  []record.State `json:"states"`
	History []fileHistory  `json:"history,omitempty"`
}

type fileEvent struct {
	Seq          int64        `json:"seq"`
	RuleName     string       `json:"rule"`
	Action       string       `json:"action"`
	Actor        string       `json:"actor"`
	Time         time.Time    `json:"time"`
	Before       *record.Rule `json:"before,omitempty"`
	After        *record.Rule `json:"after,omitempty"`
	RulesVersion int64        `json:"rules_version"`
	Message      string       `json:"message,omitempty"`
}

// load reads the state kept in dir, and puts the usage and states kept
// there in lv (dropping what aged out by now). It returns a nil state and no
// error if no state is kept there yet.
func load(dir string, lv *live, now time.Time) (*state, error) {
	if err := loadLive(dir, lv, now); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var f fileState
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if f.Format != fileFormat {
		return nil, fmt.Errorf("%s: unsupported format %d", path, f.Format)
	}
	st := &state{
		rules:    make(map[string]rules.Rule, len(f.Rules)),
		version:  f.Version,
		lastSeq:  f.LastSeq,
		events:   make([]entry, 0, len(f.Events)),
		budgets:  make(map[string]budget.Budget, len(f.Budgets)),
		alertSeq: f.AlertSeq,
		alerts:   make([]alertEntry, 0, len(f.Alerts)),
		fired:    make(map[string]time.Time, len(f.Fired)),

		tokens:        make(map[string]store.Token, len(f.Tokens)),
		tokensVersion: f.TokensVersion,
	}
	for i := range f.Rules {
		st.rules[f.Rules[i].Name] = f.Rules[i].ToRule()
	}
	for _, fe := range f.Events {
		action, err := record.ParseAction(fe.Action)
		if err != nil {
			return nil, fmt.Errorf("%s: event %d: %w", path, fe.Seq, err)
		}
		if fe.Seq > st.lastSeq || len(st.events) > 0 && fe.Seq <= st.events[len(st.events)-1].seq {
			return nil, fmt.Errorf("%s: event %d out of order", path, fe.Seq)
		}
		st.events = append(st.events, entry{seq: fe.Seq, ev: store.Event{
			ID:           strconv.FormatInt(fe.Seq, 10),
			RuleName:     fe.RuleName,
			Action:       action,
			Actor:        fe.Actor,
			Time:         fe.Time,
			Before:       ruleOf(fe.Before),
			After:        ruleOf(fe.After),
			RulesVersion: fe.RulesVersion,
			Message:      fe.Message,
		}})
	}
	for _, raw := range f.Budgets {
		b, err := record.UnmarshalBudget(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		st.budgets[b.Name] = b
	}
	for _, fa := range f.Alerts {
		if fa.Seq > st.alertSeq || len(st.alerts) > 0 && fa.Seq <= st.alerts[len(st.alerts)-1].seq {
			return nil, fmt.Errorf("%s: alert %d out of order", path, fa.Seq)
		}
		a, err := fa.ToAlert(strconv.FormatInt(fa.Seq, 10))
		if err != nil {
			return nil, fmt.Errorf("%s: alert %d: %w", path, fa.Seq, err)
		}
		st.alerts = append(st.alerts, alertEntry{seq: fa.Seq, alert: a})
	}
	for k, until := range f.Fired {
		if now.Before(until) {
			st.fired[k] = until
		}
	}
	for i := range f.Tokens {
		t, err := f.Tokens[i].ToToken()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		st.tokens[t.Name] = t
	}
	return st, nil
}

func loadLive(dir string, lv *live, now time.Time) error {
	path := filepath.Join(dir, usageFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	var f fileLive
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	if f.Format != fileFormat {
		return fmt.Errorf("%s: unsupported format %d", path, f.Format)
	}
	if err := lv.restore(&f, now); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// saveLive writes the usage file as save writes the state file.
func saveLive(dir string, f *fileLive) error {
	// Stable orders keep the file diffable.
	slices.SortFunc(f.States, func(a, b record.State) int { return strings.Compare(a.Budget, b.Budget) })
	slices.SortFunc(f.Usage, func(a, b fileUsage) int {
		return cmp.Or(strings.Compare(a.Budget, b.Budget), strings.Compare(a.Month, b.Month))
	})
	slices.SortFunc(f.History, func(a, b fileHistory) int {
		return cmp.Or(strings.Compare(a.Budget, b.Budget), strings.Compare(a.Month, b.Month))
	})
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode usage: %w", err)
	}
	if err := writeAtomic(dir, usageFile, b); err != nil {
		return fmt.Errorf("save usage: %w", err)
	}
	return nil
}

// save writes st to dir so that the file is either the old state or the new
// one after a crash: a temporary file is written and synced, renamed over the
// state file, and the directory synced so the rename itself is durable.
func save(dir string, st *state) error {
	f := fileState{
		Format:   fileFormat,
		Version:  st.version,
		LastSeq:  st.lastSeq,
		Rules:    make([]record.Rule, 0, len(st.rules)),
		Events:   make([]fileEvent, 0, len(st.events)),
		AlertSeq: st.alertSeq,
		Alerts:   make([]fileAlert, len(st.alerts)),
		Fired:    st.fired,
	}
	rs := make([]rules.Rule, 0, len(st.rules))
	for _, r := range st.rules {
		rs = append(rs, r)
	}
	rules.Sort(rs) // a stable order keeps the file diffable
	for i := range rs {
		f.Rules = append(f.Rules, record.FromRule(&rs[i]))
	}
	// The rules' tails and the log of all rules, as one list in seq order
	// (New splits it again).
	all := st.events
	if len(st.tails) > 0 {
		all = slices.Clone(st.events)
		for _, t := range st.tails {
			all = append(all, t...)
		}
		slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	}
	for _, e := range all {
		f.Events = append(f.Events, fileEvent{
			Seq:          e.seq,
			RuleName:     e.ev.RuleName,
			Action:       e.ev.Action.String(),
			Actor:        e.ev.Actor,
			Time:         e.ev.Time,
			Before:       recordOf(e.ev.Before),
			After:        recordOf(e.ev.After),
			RulesVersion: e.ev.RulesVersion,
			Message:      e.ev.Message,
		})
	}
	for _, name := range slices.Sorted(maps.Keys(st.budgets)) {
		b := st.budgets[name]
		raw, err := record.MarshalBudget(&b)
		if err != nil {
			return err
		}
		f.Budgets = append(f.Budgets, raw)
	}
	for i, e := range st.alerts {
		f.Alerts[i] = fileAlert{Seq: e.seq, Alert: record.FromAlert(&e.alert)}
	}
	f.TokensVersion = st.tokensVersion
	for _, name := range slices.Sorted(maps.Keys(st.tokens)) {
		t := st.tokens[name]
		f.Tokens = append(f.Tokens, record.FromToken(&t))
	}
	b, err := json.Marshal(&f)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := writeAtomic(dir, stateFile, b); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func writeAtomic(dir, name string, b []byte) (err error) {
	tmp, err := os.CreateTemp(dir, name+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func ruleOf(rec *record.Rule) *rules.Rule {
	if rec == nil {
		return nil
	}
	r := rec.ToRule()
	return &r
}

func recordOf(r *rules.Rule) *record.Rule {
	if r == nil {
		return nil
	}
	rec := record.FromRule(r)
	return &rec
}
