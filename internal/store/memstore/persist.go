package memstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

// Files in Options.DataDir.
const (
	stateFile = "rules.json"
	lockFile  = "rules.lock"
)

// fileFormat is the version of the state file's layout.
const fileFormat = 1

// fileState is the state file: the whole store, rewritten on every edit.
type fileState struct {
	Format  int           `json:"format"`
	Version int64         `json:"version"`
	LastSeq int64         `json:"last_seq"`
	Rules   []record.Rule `json:"rules"`
	Events  []fileEvent   `json:"events"` // oldest first
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
}

// load reads the state kept in dir. It returns nil and no error if nothing
// is kept there yet.
func load(dir string) (*state, error) {
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
		rules:   make(map[string]rules.Rule, len(f.Rules)),
		version: f.Version,
		lastSeq: f.LastSeq,
		events:  make([]entry, 0, len(f.Events)),
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
		}})
	}
	return st, nil
}

// save writes st to dir so that the file is either the old state or the new
// one after a crash: a temporary file is written and synced, renamed over the
// state file, and the directory synced so the rename itself is durable.
func save(dir string, st *state) error {
	f := fileState{
		Format:  fileFormat,
		Version: st.version,
		LastSeq: st.lastSeq,
		Rules:   make([]record.Rule, 0, len(st.rules)),
		Events:  make([]fileEvent, len(st.events)),
	}
	rs := make([]rules.Rule, 0, len(st.rules))
	for _, r := range st.rules {
		rs = append(rs, r)
	}
	rules.Sort(rs) // a stable order keeps the file diffable
	for i := range rs {
		f.Rules = append(f.Rules, record.FromRule(&rs[i]))
	}
	for i, e := range st.events {
		f.Events[i] = fileEvent{
			Seq:          e.seq,
			RuleName:     e.ev.RuleName,
			Action:       e.ev.Action.String(),
			Actor:        e.ev.Actor,
			Time:         e.ev.Time,
			Before:       recordOf(e.ev.Before),
			After:        recordOf(e.ev.After),
			RulesVersion: e.ev.RulesVersion,
		}
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
