package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
)

// Token is the stored JSON form of store.Token. Its field names are part of
// the stored format (redisstore's Lua reads "revoke_time", "expire_time",
// "hash" and "access_key_id"), so they must not change. Times are RFC 3339
// strings in UTC, empty when zero, so the Lua can compare them as strings.
type Token struct {
	Name         string   `json:"name"`
	Role         string   `json:"role"`
	Services     []string `json:"services,omitempty"`
	Hash         string   `json:"hash,omitempty"`
	AccessKeyID  string   `json:"access_key_id,omitempty"`
	SealedSecret string   `json:"sealed_secret,omitempty"`
	CreateTime   string   `json:"create_time"`
	ExpireTime   string   `json:"expire_time,omitempty"`
	RevokeTime   string   `json:"revoke_time,omitempty"`
	CreatedBy    string   `json:"created_by,omitempty"`
	RevokedBy    string   `json:"revoked_by,omitempty"`
}

// TimeFormat is how token times are stored: fixed width, so that two UTC
// times compare as strings as they do as times.
const TimeFormat = "2006-01-02T15:04:05.000000000Z"

// FormatTime returns t as tokens store it; "" for the zero time.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeFormat)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(TimeFormat, s)
}

// FromToken returns t's stored form. It shares t's slice.
func FromToken(t *store.Token) Token {
	return Token{
		Name:         t.Name,
		Role:         t.Role,
		Services:     t.Services,
		Hash:         t.Hash,
		AccessKeyID:  t.AccessKeyID,
		SealedSecret: t.SealedSecret,
		CreateTime:   FormatTime(t.CreateTime),
		ExpireTime:   FormatTime(t.ExpireTime),
		RevokeTime:   FormatTime(t.RevokeTime),
		CreatedBy:    t.CreatedBy,
		RevokedBy:    t.RevokedBy,
	}
}

// ToToken returns the token rec stores. It shares rec's slice.
func (rec *Token) ToToken() (store.Token, error) {
	t := store.Token{
		Name:         rec.Name,
		Role:         rec.Role,
		Services:     rec.Services,
		Hash:         rec.Hash,
		AccessKeyID:  rec.AccessKeyID,
		SealedSecret: rec.SealedSecret,
		CreatedBy:    rec.CreatedBy,
		RevokedBy:    rec.RevokedBy,
	}
	var err error
	if t.CreateTime, err = parseTime(rec.CreateTime); err != nil {
		return store.Token{}, fmt.Errorf("token %q: create_time: %w", rec.Name, err)
	}
	if t.ExpireTime, err = parseTime(rec.ExpireTime); err != nil {
		return store.Token{}, fmt.Errorf("token %q: expire_time: %w", rec.Name, err)
	}
	if t.RevokeTime, err = parseTime(rec.RevokeTime); err != nil {
		return store.Token{}, fmt.Errorf("token %q: revoke_time: %w", rec.Name, err)
	}
	return t, nil
}

// MarshalToken encodes t in its stored form.
func MarshalToken(t *store.Token) ([]byte, error) {
	b, err := json.Marshal(FromToken(t))
	if err != nil {
		return nil, fmt.Errorf("encode token %q: %w", t.Name, err)
	}
	return b, nil
}

// UnmarshalToken decodes a token stored by MarshalToken.
func UnmarshalToken(b []byte) (store.Token, error) {
	var rec Token
	if err := json.Unmarshal(b, &rec); err != nil {
		return store.Token{}, fmt.Errorf("decode stored token: %w", err)
	}
	return rec.ToToken()
}

// NormalizeToken returns t as a store returns it: times in UTC, without a
// monotonic reading, at the stored precision.
func NormalizeToken(t store.Token) store.Token {
	t = t.Clone()
	t.CreateTime, t.ExpireTime, t.RevokeTime = Timestamp(t.CreateTime), Timestamp(t.ExpireTime), Timestamp(t.RevokeTime)
	return t
}

// Prunable reports whether t ended more than store.TokenRetention before
// now, so that CreateToken may drop it.
func Prunable(t *store.Token, now time.Time) bool {
	cut := now.Add(-store.TokenRetention)
	return !t.RevokeTime.IsZero() && t.RevokeTime.Before(cut) ||
		!t.ExpireTime.IsZero() && t.ExpireTime.Before(cut)
}
