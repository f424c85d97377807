package auth_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestTokenSecretShape(t *testing.T) {
	re := regexp.MustCompile(`^tsc_[a-z2-7]{58}$`)
	seen := map[string]bool{}
	for range 100 {
		s := auth.NewTokenSecret()
		if !re.MatchString(s) {
			t.Fatalf("token %q does not look like tsc_ and 58 base32 characters", s)
		}
		if seen[s] {
			t.Fatalf("token %q twice", s)
		}
		seen[s] = true
	}
}

func TestIssueBearer(t *testing.T) {
	e := newEnv(t, auth.Options{})
	iss, err := auth.Issue(auth.TokenSpec{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}, TTL: 24 * time.Hour, Actor: "token:root"}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	rec := iss.Record
	if rec.Hash != auth.HashToken(iss.Secret) || strings.Contains(rec.Hash, iss.Secret) || rec.SealedSecret != "" {
		t.Errorf("record %+v does not keep just the hash of the secret", rec)
	}
	if !rec.ExpireTime.Equal(t0.Add(24*time.Hour)) || rec.CreatedBy != "token:root" || rec.Role != "editor" {
		t.Errorf("record %+v", rec)
	}
	if _, err := e.store.CreateToken(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	p, err := e.guard.Check(t.Context(), bearer(iss.Secret), auth.Call{Name: "x", Rule: auth.Rule{Need: auth.Read}})
	if err != nil {
		t.Fatal(err)
	}
	want := auth.Principal{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}, Kind: auth.KindToken}
	if p.Name != want.Name || p.Role != want.Role || p.Kind != want.Kind || len(p.Services) != 1 || p.Actor() != "token:shop-editor" {
		t.Errorf("principal %+v, want %+v", p, want)
	}
	// Lower-case "bearer" works too; one character changed does not.
	if _, err := e.guard.Check(t.Context(), auth.Credentials{Authorization: []string{"bearer " + iss.Secret}}, auth.Call{Name: "x", Rule: auth.Rule{Need: auth.Read}}); err != nil {
		t.Errorf("scheme in lower case: %v", err)
	}
	flipped := iss.Secret[:10] + string('a'+(iss.Secret[10]-'a'+1)%26) + iss.Secret[11:]
	if _, err := e.guard.Check(t.Context(), bearer(flipped), auth.Call{Name: "x", Rule: auth.Rule{Need: auth.Read}}); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a token with a character changed: %v", err)
	}
}

func TestIssueAccessKey(t *testing.T) {
	box := testBox(t)
	iss, err := auth.Issue(auth.TokenSpec{Name: "ci", Role: auth.RoleSDK, AWS: true}, box, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^TSCK[A-Z2-7]{16}$`).MatchString(iss.AccessKeyID) || len(iss.Secret) != 40 {
		t.Errorf("access key %q / secret of %d characters: not AWS-shaped", iss.AccessKeyID, len(iss.Secret))
	}
	rec := iss.Record
	if rec.AccessKeyID != iss.AccessKeyID || rec.Hash != "" || strings.Contains(rec.SealedSecret, iss.Secret) {
		t.Errorf("record %+v", rec)
	}
	plain, err := box.Open(rec.SealedSecret, "aws-secret:"+iss.AccessKeyID)
	if err != nil || plain != iss.Secret {
		t.Errorf("the sealed secret opens to %q, %v", plain, err)
	}
	if _, err := auth.Issue(auth.TokenSpec{Name: "ci", Role: auth.RoleSDK, AWS: true}, nil, t0); err == nil || !strings.Contains(err.Error(), "--secrets-key-file") {
		t.Errorf("an AWS key without a sealing key: %v, want a refusal naming --secrets-key-file", err)
	}
}

func TestValidateSpec(t *testing.T) {
	long := strings.Repeat("x", 65)
	tests := []struct {
		name   string
		spec   auth.TokenSpec
		fields []string
	}{
		{"ok", auth.TokenSpec{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}}, nil},
		{"no name", auth.TokenSpec{Role: auth.RoleSDK}, []string{"name"}},
		{"long name", auth.TokenSpec{Name: long, Role: auth.RoleSDK}, []string{"name"}},
		{"bad name", auth.TokenSpec{Name: "a b", Role: auth.RoleSDK}, []string{"name"}},
		{"bad role", auth.TokenSpec{Name: "a", Role: "root"}, []string{"role"}},
		{"empty glob", auth.TokenSpec{Name: "a", Role: auth.RoleSDK, Services: []string{""}}, []string{"services[0]"}},
		{"negative ttl", auth.TokenSpec{Name: "a", Role: auth.RoleSDK, TTL: -time.Second}, []string{"ttl"}},
		{"too many globs", auth.TokenSpec{Name: "a", Role: auth.RoleSDK, Services: strings.Fields(strings.Repeat("s ", 17))}, []string{"services"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auth.ValidateSpec(&tt.spec)
			var ve *rules.ValidationError
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a *rules.ValidationError", err)
			}
			var got []string
			for _, v := range ve.Violations {
				got = append(got, v.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %q, want %q", got, tt.fields)
			}
		})
	}
}
