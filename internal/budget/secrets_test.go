package budget_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/secrets"
)

func TestSealSecrets(t *testing.T) {
	box, err := secrets.NewBox(bytes.Repeat([]byte{3}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	in := budget.Budget{Name: "shop", Channels: []budget.Channel{
		{WebhookURL: "https://a.example/h", Secret: "s3cret"},
		{WebhookURL: "https://b.example/h"}, // no secret
	}}
	sealed, err := budget.SealSecrets(in, box)
	if err != nil {
		t.Fatal(err)
	}
	if in.Channels[0].Secret != "s3cret" {
		t.Error("SealSecrets changed its argument")
	}
	if s := sealed.Channels[0].Secret; !secrets.IsSealed(s) || strings.Contains(s, "s3cret") || sealed.Channels[1].Secret != "" {
		t.Errorf("sealed channels %+v", sealed.Channels)
	}
	again, err := budget.SealSecrets(sealed, box)
	if err != nil || again.Channels[0].Secret != sealed.Channels[0].Secret {
		t.Errorf("sealing twice: %v, %q", err, again.Channels[0].Secret)
	}
	opened, err := budget.OpenSecrets(sealed, box)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, opened); d != "" {
		t.Errorf("OpenSecrets(SealSecrets(b)) (-want +got):\n%s", d)
	}
	// A plain secret from before a key was configured still opens.
	if got, err := budget.OpenSecrets(in, box); err != nil || got.Channels[0].Secret != "s3cret" {
		t.Errorf("a plain secret: %v, %+v", err, got.Channels)
	}
	// Moved to another budget, a sealed secret does not open.
	moved := sealed
	moved.Name = "payments"
	_, err = budget.OpenSecrets(moved, box)
	if !errors.Is(err, secrets.ErrCorrupt) || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "channels[0].secret") {
		t.Errorf("a sealed secret in another budget: %v", err)
	}
	// Without a key, nothing is sealed, and sealed values cannot be read.
	if plain, err := budget.SealSecrets(in, nil); err != nil || plain.Channels[0].Secret != "s3cret" {
		t.Errorf("without a key: %v, %+v", err, plain.Channels)
	}
	if _, err := budget.OpenSecrets(sealed, nil); !errors.Is(err, secrets.ErrNoKey) {
		t.Errorf("opening without a key: %v", err)
	}
}
