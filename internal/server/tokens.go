package server

import (
	"context"
	"encoding/base64"
	"log/slog"
	"slices"
	"strings"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
)

// TokenStore is what the token service needs from a store.
type TokenStore interface {
	CreateToken(ctx context.Context, t store.Token) (store.Token, error)
	Token(ctx context.Context, name string) (store.Token, error)
	Tokens(ctx context.Context) (store.TokenSnapshot, error)
	RevokeToken(ctx context.Context, name, actor string) (store.Token, error)
}

// tokenService is the gRPC face of credentials: package auth makes them
// (auth.Issue), the store keeps their records. No answer carries a token's
// hash or an AWS key's sealed secret (apiconv.TokenToProto); the secret
// itself is in CreateToken's answer only, and never logged.
type tokenService struct {
	pb.UnimplementedTokenServiceServer
	store TokenStore
	box   *secrets.Box
	now   func() time.Time
	log   *slog.Logger
}

func (s *tokenService) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	spec := auth.TokenSpec{
		Name:     req.GetName(),
		Role:     auth.Role(apiconv.RoleFromProto(req.GetRole())),
		Services: req.GetServices(),
		AWS:      req.GetAws(),
		Actor:    auth.Actor(ctx),
	}
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, invalid("ttl", err.Error())
		}
		spec.TTL = d.AsDuration()
	}
	iss, err := auth.Issue(spec, s.box, s.now())
	if err != nil {
		return nil, err
	}
	created, err := s.store.CreateToken(ctx, iss.Record)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "token created", "name", created.Name, "role", created.Role, "services", created.Services,
		"aws", created.AccessKeyID != "", "actor", spec.Actor)
	return &pb.CreateTokenResponse{Token: apiconv.TokenToProto(&created, s.now()), Secret: iss.Secret}, nil
}

func (s *tokenService) GetToken(ctx context.Context, req *pb.GetTokenRequest) (*pb.GetTokenResponse, error) {
	if err := checkTokenName(req.GetName()); err != nil {
		return nil, err
	}
	t, err := s.store.Token(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetTokenResponse{Token: apiconv.TokenToProto(&t, s.now())}, nil
}

func (s *tokenService) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 || len(b) > auth.MaxTokenNameLen {
			return nil, invalid("page_token", "not a page token of ListTokens")
		}
		after = string(b)
	}
	snap, err := s.store.Tokens(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	resp := &pb.ListTokensResponse{}
	slices.SortFunc(snap.Tokens, func(a, b store.Token) int { return strings.Compare(a.Name, b.Name) })
	for i := range snap.Tokens {
		t := &snap.Tokens[i]
		if after != "" && t.Name <= after {
			continue
		}
		if len(resp.Tokens) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Tokens[size-1].GetName()))
			break
		}
		resp.Tokens = append(resp.Tokens, apiconv.TokenToProto(t, now))
	}
	return resp, nil
}

func (s *tokenService) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	if err := checkTokenName(req.GetName()); err != nil {
		return nil, err
	}
	actor := auth.Actor(ctx)
	t, err := s.store.RevokeToken(ctx, req.GetName(), actor)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "token revoked", "name", t.Name, "actor", actor)
	return &pb.RevokeTokenResponse{Token: apiconv.TokenToProto(&t, s.now())}, nil
}

// checkTokenName checks the name of GetToken and RevokeToken as
// CreateToken's.
func checkTokenName(name string) error {
	return auth.ValidateSpec(&auth.TokenSpec{Name: name, Role: auth.RoleViewer})
}
