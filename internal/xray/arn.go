package xray

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tracesampling/controlplane/internal/store"
)

// ruleARNs builds and reads the ARNs of sampling rules,
// arn:PARTITION:xray:REGION:ACCOUNT:sampling-rule/NAME, for the region and
// account this control plane presents itself as.
type ruleARNs struct {
	prefix string
}

func newRuleARNs(region, account string) ruleARNs {
	partition := "aws"
	switch {
	case strings.HasPrefix(region, "cn-"):
		partition = "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		partition = "aws-us-gov"
	}
	return ruleARNs{prefix: "arn:" + partition + ":xray:" + region + ":" + account + ":sampling-rule/"}
}

func (a ruleARNs) rule(name string) string { return a.prefix + name }

// name returns the rule an ARN names. A string that is not an ARN is a bad
// request; an ARN of anything else (another account, region or resource
// type) names no rule here: store.ErrNotFound.
func (a ruleARNs) name(arn string) (string, error) {
	if name, ok := strings.CutPrefix(arn, a.prefix); ok && name != "" && !strings.Contains(name, "/") {
		return name, nil
	}
	if parts := strings.SplitN(arn, ":", 6); len(parts) == 6 && parts[0] == "arn" {
		return "", fmt.Errorf("%.200q is not a sampling rule of this control plane: %w", arn, store.ErrNotFound)
	}
	return "", errNotARN
}

// errNotARN: callers report it as a violation of their ARN field.
var errNotARN = errors.New("is not an ARN (want arn:aws:xray:REGION:ACCOUNT:sampling-rule/NAME)")
