package auth_test

import (
	"testing"

	"github.com/tracesampling/controlplane/internal/auth"
)

// BenchmarkCheck measures what every call pays for access control: a
// stored token's hash, the cache lookup, the policy and the scope, and an
// edit's rate bucket.
func BenchmarkCheck(b *testing.B) {
	e := newEnv(b, auth.Options{Limits: auth.Limits{EditsPerSecond: 1e12, EditBurst: 1 << 30}})
	sdk := e.issue(b, auth.TokenSpec{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}})
	ed := e.issue(b, auth.TokenSpec{Name: "ed", Role: auth.RoleEditor})
	for _, bc := range []struct {
		name  string
		creds auth.Credentials
		call  auth.Call
	}{
		{"sample/stored token", bearer(sdk.Secret), sampleCall},
		{"sample/static token", bearer(adminSecret), sampleCall},
		{"edit/stored token", bearer(ed.Secret), editCall},
		{"health/no credentials", auth.Credentials{Peer: remote}, healthCall},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.guard.Check(ctx, bc.creds, bc.call); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
