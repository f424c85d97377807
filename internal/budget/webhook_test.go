package budget

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const slackURL = "https://hooks.slack.com/services/T0001/B0002/Xq3vZk9PqR7sLm2Nw8Yt4Hd6"

func TestRedactURL(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{slackURL, "https://hooks.slack.com/…4Hd6"},
		{"https://user:pw@hooks.example.com:8443/a#frag", "https://hooks.example.com:8443/…"},
		{"http://alerts.internal/budget", "http://alerts.internal/…"}, // 7 characters: nothing shown
		{"https://x.example.com/hook?token=s3cr3t-t0k3n-abcd", "https://x.example.com/…abcd"},
		{"https://x.example.com", "https://x.example.com/…"},
		{"not a url", "<invalid URL>"},
	}
	for _, tt := range tests {
		got := RedactURL(tt.url)
		if got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
		if tt.want != "<invalid URL>" && !IsRedacted(got) {
			t.Errorf("IsRedacted(%q) = false", got)
		}
		if IsRedacted(tt.url) {
			t.Errorf("IsRedacted(%q) = true for a full URL", tt.url)
		}
	}
}

func TestKeepHidden(t *testing.T) {
	other := "https://hooks.slack.com/services/T0001/B0003/Pp5Lx2Wq9Rt6Zk3Mn7Cv1Hd6"
	stored := []Channel{
		{WebhookURL: slackURL, Secret: "one"},
		{WebhookURL: other, Secret: "two"}, // redacts like slackURL
		{WebhookURL: "http://alerts.internal/b"},
	}
	tests := []struct {
		name string
		sent []Channel
		want []Channel
	}{
		{
			name: "sent back as answered: everything kept",
			sent: []Channel{
				{WebhookURL: RedactURL(slackURL), Secret: SecretMask},
				{WebhookURL: RedactURL(other), Secret: SecretMask},
				{WebhookURL: "http://alerts.internal/…"},
			},
			want: stored,
		},
		{
			name: "reordered: each redacted URL takes the next stored one of its form",
			sent: []Channel{
				{WebhookURL: "http://alerts.internal/…"},
				{WebhookURL: RedactURL(slackURL), Secret: SecretMask},
			},
			want: []Channel{stored[2], stored[0]},
		},
		{
			name: "a new secret, or none, replaces the stored one",
			sent: []Channel{
				{WebhookURL: RedactURL(slackURL), Secret: "new"},
				{WebhookURL: RedactURL(other)},
			},
			want: []Channel{{WebhookURL: slackURL, Secret: "new"}, {WebhookURL: other}},
		},
		{
			name: "a full URL with the masked secret keeps its secret; a new one gets none",
			sent: []Channel{{WebhookURL: other, Secret: SecretMask}, {WebhookURL: "https://new.example.com/x", Secret: SecretMask}},
			want: []Channel{{WebhookURL: other, Secret: "two"}, {WebhookURL: "https://new.example.com/x"}},
		},
		{
			name: "more redacted URLs than stored: the extra one stays redacted, for Validate",
			sent: []Channel{{WebhookURL: "http://alerts.internal/…"}, {WebhookURL: "http://alerts.internal/…", Secret: SecretMask}},
			want: []Channel{stored[2], {WebhookURL: "http://alerts.internal/…"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := KeepHidden(tt.sent, stored)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("KeepHidden (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateRefusesRedactedURLs(t *testing.T) {
	b := Budget{Name: "b", MonthlyAmountMicros: 1 * MicrosPerUnit, Channels: []Channel{{WebhookURL: RedactURL(slackURL)}}}.Normalize()
	err := Validate(&b)
	if err == nil || !strings.Contains(err.Error(), "channels[0].webhook_url: a redacted URL") {
		t.Errorf("Validate of a redacted URL: %v", err)
	}
}

// TestDeliverErrorsHideTheURL: a delivery that fails names the webhook as
// answers do; net/http's errors, which quote the whole URL, do not reach
// the error (which the controller logs).
func TestDeliverErrorsHideTheURL(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now: every attempt is refused
	secretPath := "/services/T0001/B0002/Xq3vZk9PqR7sLm2Nw8Yt4Hd6"
	w := &Webhook{Attempts: 2, Backoff: time.Millisecond}
	a := &Alert{ID: "1", Budget: "b", Kind: AlertSpend, Time: DefaultSimStart(), MonthStart: DefaultSimStart()}
	err = w.Deliver(context.Background(), Channel{WebhookURL: "http://" + addr + secretPath}, a)
	if err == nil {
		t.Fatal("delivery to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "Xq3vZk9P") || strings.Contains(err.Error(), "/services") {
		t.Errorf("the error shows the webhook's path: %v", err)
	}
	if !strings.Contains(err.Error(), "http://"+addr+"/…") {
		t.Errorf("the error does not name the webhook as answers do: %v", err)
	}
}
