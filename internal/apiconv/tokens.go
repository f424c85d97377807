package apiconv

import (
	"slices"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/store"
)

var roles = map[string]pb.Role{
	"viewer": pb.Role_ROLE_VIEWER,
	"editor": pb.Role_ROLE_EDITOR,
	"sdk":    pb.Role_ROLE_SDK,
	"admin":  pb.Role_ROLE_ADMIN,
}

// RoleToProto maps a role's name ("viewer", …); an unknown one is
// ROLE_UNSPECIFIED.
func RoleToProto(role string) pb.Role { return roles[role] }

// RoleFromProto returns a role's name, or "" for ROLE_UNSPECIFIED and
// values the enum does not have.
func RoleFromProto(r pb.Role) string {
	for name, v := range roles {
		if v == r && r != pb.Role_ROLE_UNSPECIFIED {
			return name
		}
	}
	return ""
}

// TokenToProto returns the API form of a stored credential at now. It
// never carries the token's hash or an AWS key's sealed secret: only what
// identifies and describes the credential.
func TokenToProto(t *store.Token, now time.Time) *pb.Token {
	p := &pb.Token{
		Name:        t.Name,
		Role:        RoleToProto(t.Role),
		Services:    slices.Clone(t.Services),
		AccessKeyId: t.AccessKeyID,
		CreateTime:  timestamp(t.CreateTime),
		ExpireTime:  timestamp(t.ExpireTime),
		RevokeTime:  timestamp(t.RevokeTime),
		CreatedBy:   t.CreatedBy,
		RevokedBy:   t.RevokedBy,
		State:       pb.Token_STATE_ACTIVE,
	}
	switch {
	case !t.RevokeTime.IsZero() && !now.Before(t.RevokeTime):
		p.State = pb.Token_STATE_REVOKED
	case !t.ExpireTime.IsZero() && !now.Before(t.ExpireTime):
		p.State = pb.Token_STATE_EXPIRED
	}
	return p
}
