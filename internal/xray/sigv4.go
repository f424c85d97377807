package xray

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// sigV4Algorithm is the only signing algorithm the AWS SDKs and CLI use for
// X-Ray.
const sigV4Algorithm = "AWS4-HMAC-SHA256"

// Signature is the parsed Authorization header of a request signed with AWS
// Signature Version 4, as the AWS SDKs and CLI send it:
//
//	AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/xray/aws4_request,
//	SignedHeaders=host;x-amz-date, Signature=<64 hex digits>
type Signature struct {
	AccessKeyID string
	// Date (YYYYMMDD), Region and Service are the credential scope.
	Date    string
	Region  string
	Service string
	// SignedHeaders are the lower-case names of the signed headers.
	SignedHeaders []string
	// Signature is the hex HMAC-SHA256 the client computed.
	Signature string
}

// Verifier checks who sent a request, for access control. It is given the
// request, its body (already read, at most Options.MaxBodyBytes) and its
// signature (nil if it was not signed with SigV4), and returns the context
// the call runs in, carrying who made it for the core (the audit log's
// actor), or an error wrapping ErrSignature or ErrAccessDenied. Verification must recompute the signature with the AWS
// SDK's signer (github.com/aws/aws-sdk-go-v2/aws/signer/v4) from the
// secret of the key the control plane issued, never with hand-written
// signing code. Implementations are safe for concurrent use.
type Verifier interface {
	Verify(ctx context.Context, r *http.Request, body []byte, sig *Signature) (context.Context, error)
}

// errBadAuthorization: the Authorization header claims SigV4 but is not a
// well-formed one (AWS's IncompleteSignatureException).
var errBadAuthorization = errors.New("incomplete signature")

// parseSignature parses a SigV4 Authorization header value. It returns nil,
// nil for a header of another scheme (bearer tokens come with access
// control) and an error wrapping errBadAuthorization for a malformed SigV4
// header.
func parseSignature(header string) (*Signature, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(header), " ")
	if scheme != sigV4Algorithm {
		if strings.HasPrefix(scheme, "AWS4-") {
			return nil, fmt.Errorf("%w: unsupported algorithm %.40q", errBadAuthorization, scheme)
		}
		return nil, nil
	}
	var sig Signature
	seen := map[string]bool{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return nil, fmt.Errorf("%w: malformed component %.40q", errBadAuthorization, part)
		}
		seen[k] = true
		switch k {
		case "Credential":
			scope := strings.Split(v, "/")
			if len(scope) != 5 || !isKeyID(scope[0]) || !isDate(scope[1]) || scope[2] == "" || scope[3] == "" || scope[4] != "aws4_request" {
				return nil, fmt.Errorf("%w: Credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request", errBadAuthorization)
			}
			sig.AccessKeyID, sig.Date, sig.Region, sig.Service = scope[0], scope[1], scope[2], scope[3]
		case "SignedHeaders":
			sig.SignedHeaders = strings.Split(v, ";")
			for _, h := range sig.SignedHeaders {
				if h == "" || h != strings.ToLower(h) {
					return nil, fmt.Errorf("%w: SignedHeaders must be lower-case names separated by ';'", errBadAuthorization)
				}
			}
		case "Signature":
			if len(v) != 64 || strings.Trim(v, "0123456789abcdef") != "" {
				return nil, fmt.Errorf("%w: Signature must be 64 lower-case hex digits", errBadAuthorization)
			}
			sig.Signature = v
		default:
			return nil, fmt.Errorf("%w: unknown component %.40q", errBadAuthorization, k)
		}
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: %s is missing", errBadAuthorization, k)
		}
	}
	return &sig, nil
}

// isKeyID accepts what AWS access key IDs are made of: 1-128 letters and
// digits.
func isKeyID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func isDate(s string) bool {
	return len(s) == 8 && strings.Trim(s, "0123456789") == ""
}
