package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example against a real control plane is in the server's module
// (internal/sdke2e), so that this module needs none of the server's
// dependencies.

func TestExampleRejectsBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--rate", "0"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "--rate") {
		t.Errorf("--rate 0: %v, want an error naming --rate", err)
	}
	if err := run(context.Background(), []string{"--nope"}, &stdout, &stderr); err == nil {
		t.Error("an unknown flag was accepted")
	}
}
