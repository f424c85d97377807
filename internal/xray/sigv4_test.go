package xray

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSignature(t *testing.T) {
	sig := strings.Repeat("0a", 32)
	for _, tc := range []struct {
		name   string
		header string
		want   *Signature
		bad    bool
	}{
		{
			name:   "AWS SDK for Go v2",
			header: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/xray/aws4_request, SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-date, Signature=" + sig,
			want: &Signature{AccessKeyID: "AKIDEXAMPLE", Date: "20250102", Region: "us-east-1", Service: "xray",
				SignedHeaders: []string{"amz-sdk-invocation-id", "amz-sdk-request", "content-length", "content-type", "host", "x-amz-date"}, Signature: sig},
		},
		{
			name:   "no spaces after commas (botocore)",
			header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/eu-west-1/xray/aws4_request,SignedHeaders=host;x-amz-date,Signature=" + sig,
			want:   &Signature{AccessKeyID: "AKID", Date: "20250102", Region: "eu-west-1", Service: "xray", SignedHeaders: []string{"host", "x-amz-date"}, Signature: sig},
		},
		{name: "bearer token: not ours", header: "Bearer abc"},
		{name: "basic: not ours", header: "Basic YTpi"},
		{name: "other algorithm", header: "AWS4-ECDSA-P256-SHA256 Credential=a/b", bad: true},
		{name: "no signature", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/xray/aws4_request, SignedHeaders=host", bad: true},
		{name: "short scope", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/xray/aws4_request, SignedHeaders=host, Signature=" + sig, bad: true},
		{name: "bad date", header: "AWS4-HMAC-SHA256 Credential=AKID/2025-1-2/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=" + sig, bad: true},
		{name: "short signature", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=abc", bad: true},
		{name: "upper-case header", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/xray/aws4_request, SignedHeaders=Host, Signature=" + sig, bad: true},
		{name: "twice", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/xray/aws4_request, Credential=AKID/20250102/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=" + sig, bad: true},
		{name: "unknown component", header: "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=" + sig + ", Extra=1", bad: true},
		{name: "key with a space", header: "AWS4-HMAC-SHA256 Credential=AK ID/20250102/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=" + sig, bad: true},
		{name: "scheme only", header: "AWS4-HMAC-SHA256", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSignature(tc.header)
			if tc.bad {
				if !errors.Is(err, errBadAuthorization) {
					t.Errorf("err %v, want errBadAuthorization", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
