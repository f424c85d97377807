package sampler

import (
	"context"

	"google.golang.org/grpc"
)

// WithToken sends token ("tsc_…", from `controlplane tokens create NAME
// --role sdk`) as "authorization: Bearer <token>" on every call and stream,
// for a control plane with access control. Over plaintext the token can be
// read on the network: use it with WithTransportCredentials outside a
// trusted network.
func WithToken(token string) Option {
	return WithDialOptions(grpc.WithPerRPCCredentials(bearerToken(token)))
}

// bearerToken is grpc credentials.PerRPCCredentials for a bearer token.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false so that a sampler on a private
// network without TLS can still authenticate.
func (bearerToken) RequireTransportSecurity() bool { return false }
