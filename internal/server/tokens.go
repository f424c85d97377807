package server

import (
	"context"
	"log/slog"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/edit"
)

// TokenStore is what the token service needs from a store.
type TokenStore = edit.TokenStore

// tokenService is the gRPC face of credentials (package edit's Tokens:
// decode, call it, encode). No answer carries a token's hash or an AWS
// key's sealed secret (apiconv.TokenToProto); the secret itself is in
// CreateToken's answer only, and never logged.
type tokenService struct {
	pb.UnimplementedTokenServiceServer
	edit *edit.Tokens
	// changed tells the guard of a credential made or revoked here
	// (auth.Guard.TokensChanged), so that it holds from this answer on.
	changed func(context.Context)
	log     *slog.Logger
}

func (s *tokenService) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	spec := auth.TokenSpec{
		Name:     req.GetName(),
		Role:     auth.Role(apiconv.RoleFromProto(req.GetRole())),
		Services: req.GetServices(),
		AWS:      req.GetAws(),
	}
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, invalid("ttl", err.Error())
		}
		spec.TTL = d.AsDuration()
	}
	created, secret, err := s.edit.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	s.changed(ctx)
	s.log.InfoContext(ctx, "token created", "name", created.Name, "role", created.Role, "services", created.Services,
		"aws", created.AccessKeyID != "", "actor", created.CreatedBy)
	return &pb.CreateTokenResponse{Token: apiconv.TokenToProto(&created, s.edit.Now()), Secret: secret}, nil
}

func (s *tokenService) GetToken(ctx context.Context, req *pb.GetTokenRequest) (*pb.GetTokenResponse, error) {
	t, err := s.edit.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetTokenResponse{Token: apiconv.TokenToProto(&t, s.edit.Now())}, nil
}

func (s *tokenService) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	page, err := s.edit.List(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	now := s.edit.Now()
	resp := &pb.ListTokensResponse{NextPageToken: page.NextToken}
	for i := range page.Tokens {
		resp.Tokens = append(resp.Tokens, apiconv.TokenToProto(&page.Tokens[i], now))
	}
	return resp, nil
}

func (s *tokenService) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	t, err := s.edit.Revoke(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	s.changed(ctx)
	s.log.InfoContext(ctx, "token revoked", "name", t.Name, "actor", auth.Actor(ctx))
	return &pb.RevokeTokenResponse{Token: apiconv.TokenToProto(&t, s.edit.Now())}, nil
}
