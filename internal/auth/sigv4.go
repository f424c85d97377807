package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
)

// MaxSigV4Skew is how far a signed request's X-Amz-Date may be from the
// server's clock, either way, as AWS allows.
const MaxSigV4Skew = 15 * time.Minute

const sigV4Algorithm = "AWS4-HMAC-SHA256"

// errSignature marks refusals of a signature itself (X-Ray's
// InvalidSignatureException), as opposed to an unknown key.
var errSignature = errors.New("signature does not verify")

func badSignature(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnauthenticated, errSignature, fmt.Sprintf(format, args...))
}

// sigV4Header is a parsed SigV4 Authorization header.
type sigV4Header struct {
	keyID, date, region, service string
	signedHeaders                []string
	signature                    string
}

func isSigV4(authorization string) bool {
	return strings.HasPrefix(strings.TrimSpace(authorization), "AWS4-")
}

func parseSigV4(h string) (sigV4Header, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if scheme != sigV4Algorithm {
		return sigV4Header{}, badSignature("unsupported signing algorithm; sign with %s", sigV4Algorithm)
	}
	var s sigV4Header
	seen := map[string]bool{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return sigV4Header{}, badSignature("malformed Authorization header")
		}
		seen[k] = true
		switch k {
		case "Credential":
			scope := strings.Split(v, "/")
			if len(scope) != 5 || scope[4] != "aws4_request" {
				return sigV4Header{}, badSignature("Credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request")
			}
			s.keyID, s.date, s.region, s.service = scope[0], scope[1], scope[2], scope[3]
		case "SignedHeaders":
			s.signedHeaders = strings.Split(v, ";")
		case "Signature":
			s.signature = v
		}
	}
	if s.keyID == "" || len(s.signedHeaders) == 0 || s.signature == "" {
		return sigV4Header{}, badSignature("the Authorization header needs Credential, SignedHeaders and Signature")
	}
	return s, nil
}

// checkSigV4 verifies a request signed with SigV4 by an access key the
// control plane issued, and authorises call for its principal. The
// signature is recomputed with the AWS SDK's signer over a copy of the
// request that holds exactly the headers the client signed, and the body
// received, then compared in constant time; the date must be within
// MaxSigV4Skew and the scope this server's region and service.
func (g *Guard) checkSigV4(ctx context.Context, r *http.Request, body []byte, call Call) (*Principal, error) {
	p, err := g.sigV4Principal(ctx, r, body)
	if err == nil {
		err = Authorize(p, call.Name, call.Rule, call.Services, nil)
	}
	if err == nil {
		err = checkGlobs(p, call.Globs)
	}
	if err == nil {
		err = g.limiter.Allow(p, call.Rule.Class)
	}
	if err != nil {
		g.count(err)
		return nil, err
	}
	return p, nil
}

func (g *Guard) sigV4Principal(ctx context.Context, r *http.Request, body []byte) (*Principal, error) {
	if vs := r.Header.Values("Authorization"); len(vs) != 1 {
		return nil, unauthenticated("send one Authorization header, not %d", len(vs))
	}
	sig, err := parseSigV4(r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	if sig.service != g.service || sig.region != g.region {
		return nil, badSignature("credential scope %s/%s: sign for region %q and service %q (aws --region %s)", sig.region, sig.service, g.region, g.service, g.region)
	}
	if !slices.Contains(sig.signedHeaders, "host") || !slices.Contains(sig.signedHeaders, "x-amz-date") {
		return nil, badSignature("the signed headers must include host and x-amz-date")
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil, badSignature("X-Amz-Date must be YYYYMMDDTHHMMSSZ")
	}
	if skew := g.now().Sub(when); skew > MaxSigV4Skew || skew < -MaxSigV4Skew {
		return nil, badSignature("signature expired: X-Amz-Date is %v from the server's time (at most %v is allowed); check the client's clock", skew.Round(time.Second), MaxSigV4Skew)
	}
	if when.Format("20060102") != sig.date {
		return nil, badSignature("the credential scope's date is not X-Amz-Date's")
	}
	if g.tokens == nil {
		return nil, unauthenticated("this control plane issues no access keys (no token store)")
	}
	c, err := g.tokens.byAccessKey(ctx, sig.keyID)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, unauthenticated("unknown access key %q; create one with `controlplane tokens create NAME --role sdk --aws`", sig.keyID)
	}
	rec := &c.tok
	if err := checkLive(rec, g.now()); err != nil {
		return nil, err
	}
	secret, err := g.box.Open(rec.SealedSecret, sealContext(rec.AccessKeyID))
	if err != nil {
		g.log.WarnContext(ctx, "cannot open an access key's secret", "token", rec.Name, "err", err)
		return nil, unauthenticated("the server cannot open access key %q's secret: check --secrets-key-file", sig.keyID)
	}
	want, err := recompute(ctx, r, body, sig, secret, when)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig.signature)) != 1 {
		return nil, badSignature("the request signature does not match: check the secret access key")
	}
	return c.p, nil
}

// recompute signs a copy of r holding only the headers the client signed,
// with the AWS SDK's signer, and returns the hex signature.
func recompute(ctx context.Context, r *http.Request, body []byte, sig sigV4Header, secret string, when time.Time) (string, error) {
	cp, err := http.NewRequestWithContext(ctx, r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return "", badSignature("cannot rebuild the request: %v", err)
	}
	cp.Host = r.Host
	for _, h := range sig.signedHeaders {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
			if cp.ContentLength < 0 {
				cp.ContentLength = int64(len(body))
			}
		default:
			vs := r.Header.Values(h)
			if len(vs) == 0 {
				return "", badSignature("signed header %q is missing", h)
			}
			cp.Header[textproto.CanonicalMIMEHeaderKey(h)] = vs
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: sig.keyID, SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(ctx, creds, cp, hex.EncodeToString(sum[:]), sig.service, sig.region, when); err != nil {
		return "", badSignature("cannot sign: %v", err)
	}
	ours, err := parseSigV4(cp.Header.Get("Authorization"))
	if err != nil {
		return "", err
	}
	if !slices.Equal(ours.signedHeaders, sig.signedHeaders) {
		// The client signed a header the AWS signer never signs (such as
		// user-agent): the signature cannot be reproduced.
		return "", badSignature("signed headers %q: only headers the AWS SDK signs are supported", strings.Join(sig.signedHeaders, ";"))
	}
	return ours.signature, nil
}

// Verify implements xray.Verifier, so the X-Ray handler refuses what the
// guard refuses even if Middleware is not in front of it, and returns the
// context with the principal, which the core takes the audit log's actor
// and the scope from. Behind Middleware (the way to serve it) the
// request's principal is already in ctx and Verify returns ctx.
func (g *Guard) Verify(ctx context.Context, r *http.Request, body []byte, sig *xray.Signature) (context.Context, error) {
	if p := FromContext(ctx); p != nil {
		return ctx, nil
	}
	if sig == nil {
		return nil, fmt.Errorf("%w: the request is not signed: sign it with an access key from `controlplane tokens create NAME --aws`", xray.ErrAccessDenied)
	}
	rule, ok := RouteRule(r.URL.Path)
	if !ok {
		return nil, fmt.Errorf("%w: %s has no access policy", xray.ErrAccessDenied, r.URL.Path)
	}
	p, err := g.checkSigV4(ctx, r, body, Call{Name: r.URL.Path, Rule: rule})
	if err != nil {
		return nil, xrayError(err)
	}
	return NewContext(ctx, p), nil
}

// xrayError wraps a refusal in the xray package's sentinel for its shape.
func xrayError(err error) error {
	switch {
	case errors.Is(err, errSignature):
		return fmt.Errorf("%w: %w", xray.ErrSignature, err)
	case errors.Is(err, ErrLimited):
		return fmt.Errorf("%w: %w", xray.ErrThrottled, err)
	case errors.Is(err, store.ErrUnavailable):
		return err
	default:
		return fmt.Errorf("%w: %w", xray.ErrAccessDenied, err)
	}
}
