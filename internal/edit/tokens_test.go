package edit_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestTokens: credentials are made and revoked by the context's principal,
// listed by name a page at a time, and refused with the field named.
func TestTokens(t *testing.T) {
	ctx := admin(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := edit.NewTokens(newStore(t), nil, func() time.Time { return now })
	actor := auth.Actor(ctx)
	var want []string
	for _, name := range []string{"ci-3", "ci-1", "ci-4", "ci-2", "ci-0"} {
		created, secret, err := e.Create(ctx, auth.TokenSpec{Name: name, Role: auth.RoleEditor, TTL: time.Hour, Actor: "spoofed"})
		if err != nil {
			t.Fatal(err)
		}
		if created.CreatedBy != actor || secret == "" || created.Hash != auth.HashToken(secret) || !created.ExpireTime.Equal(now.Add(time.Hour)) {
			t.Errorf("Create(%s) = %+v and a secret of %d characters; want it made by %s, hashed, expiring in an hour", name, created, len(secret), actor)
		}
	}
	for i := range 5 {
		want = append(want, fmt.Sprintf("ci-%d", i))
	}
	var got []string
	token := ""
	for range 10 {
		page, err := e.List(ctx, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Tokens) > 2 {
			t.Fatalf("a page of %d, page size 2", len(page.Tokens))
		}
		for _, tk := range page.Tokens {
			got = append(got, tk.Name)
		}
		if token = page.NextToken; token == "" {
			break
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listing by pages of 2 (-want +got):\n%s", diff)
	}

	revoked, err := e.Revoke(ctx, "ci-2")
	if err != nil || revoked.RevokedBy != actor || revoked.RevokeTime.IsZero() {
		t.Errorf("Revoke = %+v, %v; want revoked by %s", revoked, err, actor)
	}
	if got, err := e.Get(ctx, "ci-2"); err != nil || !got.RevokeTime.Equal(revoked.RevokeTime) {
		t.Errorf("Get after Revoke = %+v, %v", got, err)
	}

	for _, tt := range []struct {
		name  string
		call  func() error
		field string // of the validation error; empty: want target
		want  error
	}{
		{"bad page token", func() error { _, err := e.List(ctx, 2, "%%%"); return err }, "page_token", nil},
		{"bad name to get", func() error { _, err := e.Get(ctx, "no spaces"); return err }, "name", nil},
		{"bad name to revoke", func() error { _, err := e.Revoke(ctx, ""); return err }, "name", nil},
		{"unknown", func() error { _, err := e.Revoke(ctx, "nope"); return err }, "", store.ErrNotFound},
		{"taken", func() error {
			_, _, err := e.Create(ctx, auth.TokenSpec{Name: "ci-1", Role: auth.RoleViewer})
			return err
		}, "", store.ErrAlreadyExists},
		{"AWS key without a sealing key", func() error {
			_, _, err := e.Create(ctx, auth.TokenSpec{Name: "aws", Role: auth.RoleViewer, AWS: true})
			return err
		}, "", auth.ErrNoSealingKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Errorf("got %v, want %v", err, tt.want)
				}
				return
			}
			var ve *rules.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) == 0 || ve.Violations[0].Field != tt.field {
				t.Errorf("got %v, want a validation error of %s", err, tt.field)
			}
		})
	}
}
