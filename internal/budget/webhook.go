package budget

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SignatureHeader carries "sha256=<hex of HMAC-SHA256(secret, body)>", so a
// receiver can check that an alert came from this control plane.
const SignatureHeader = "X-Controlplane-Signature"

// WebhookBody is the JSON an alert is posted as. Text makes it a valid Slack
// incoming-webhook message as it is.
type WebhookBody struct {
	Text      string  `json:"text"`
	ID        string  `json:"id"`
	Budget    string  `json:"budget"`
	Kind      string  `json:"kind"`
	Threshold float64 `json:"threshold"`
	Time      string  `json:"time"`
	Month     string  `json:"month"`
	Spent     float64 `json:"spent"`
	Forecast  float64 `json:"forecast"`
	Cap       float64 `json:"cap"`
	Currency  string  `json:"currency"`
}

// Sign returns the signature header value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Webhook delivers alerts to channels with retries.
type Webhook struct {
	// Client sends the requests. Default: Egress's client, with a 10 s
	// timeout. A Client set here is used as it is, unguarded.
	Client *http.Client
	// Egress decides which addresses alerts may reach. Default: one with
	// no allow-list, which refuses loopback, link-local (cloud metadata),
	// private, carrier-grade NAT, unspecified, multicast and reserved
	// addresses, after DNS resolution and on every redirect.
	Egress *Egress
	// Attempts is how many times a delivery is tried. Default 6.
	Attempts int
	// Backoff is the first wait between attempts; it doubles each time, with
	// jitter. Default 500 ms.
	Backoff time.Duration

	once    sync.Once
	guarded *http.Client
}

// client returns w.Client, or the guarded client made once.
func (w *Webhook) client() *http.Client {
	if w.Client != nil {
		return w.Client
	}
	w.once.Do(func() {
		eg := w.Egress
		if eg == nil {
			eg, _ = NewEgress(EgressOptions{}) // no options, no error
		}
		w.guarded = eg.Client(10 * time.Second)
	})
	return w.guarded
}

// Deliver posts a to ch until the receiver answers 2xx, the attempts run
// out, or ctx ends. A 4xx other than 408 and 429 is not retried: the
// receiver will not change its mind.
func (w *Webhook) Deliver(ctx context.Context, ch Channel, a *Alert) error {
	client := w.client()
	attempts := w.Attempts
	if attempts <= 0 {
		attempts = 6
	}
	backoff := w.Backoff
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	body, err := json.Marshal(WebhookBody{
		Text: a.Message, ID: a.ID, Budget: a.Budget, Kind: a.Kind.String(), Threshold: a.Threshold,
		Time: a.Time.UTC().Format(time.RFC3339), Month: MonthKey(a.MonthStart),
		Spent: a.Spent, Forecast: a.Forecast, Cap: a.Cap, Currency: a.Currency,
	})
	if err != nil {
		return err
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			wait := backoff << (i - 1)
			wait = wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1))
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("webhook %s: %w (last error: %v)", RedactURL(ch.WebhookURL), ctx.Err(), last)
			case <-t.C:
			}
		}
		retry, err := w.post(ctx, client, ch, body, a.ID)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return fmt.Errorf("webhook %s: gave up: %w", RedactURL(ch.WebhookURL), last)
}

func (w *Webhook) post(ctx context.Context, client *http.Client, ch Channel, body []byte, id string) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return false, withoutURL(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tracesampling-controlplane")
	// The same alert always carries the same id, so receivers can drop a
	// delivery that arrives twice (a retry after a lost response).
	req.Header.Set("X-Controlplane-Alert-Id", id)
	if ch.Secret != "" {
		req.Header.Set(SignatureHeader, Sign(ch.Secret, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, withoutURL(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("status %s", resp.Status)
	}
	return false, fmt.Errorf("status %s", resp.Status)
}

// withoutURL returns err without the full URL that net/http's *url.Error
// carries, so that errors and logs never show a webhook's secret path.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// SecretMask stands in for a webhook secret in every answer.
const SecretMask = "****"

// redactedMark follows the host in a redacted URL.
const redactedMark = "/…"

// RedactURL returns what answers, logs and errors show of a webhook URL: its
// scheme and host, "/…", and, when the path and query are at least 16
// characters long, their last 4, so that webhooks on one host can be told
// apart: "https://hooks.slack.com/…Xy9Z". The path and query of a chat
// webhook are its secret; user info and fragments are never shown.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<invalid URL>"
	}
	rest := []rune(u.EscapedPath())
	if u.RawQuery != "" {
		rest = append(rest, []rune("?"+u.RawQuery)...)
	}
	tail := ""
	if len(rest) >= 16 {
		tail = string(rest[len(rest)-4:])
	}
	return u.Scheme + "://" + u.Host + redactedMark + tail
}

// IsRedacted reports whether raw has RedactURL's form: a URL as answers show
// it, which no webhook can be sent to.
func IsRedacted(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && strings.HasPrefix(u.Path, redactedMark)
}

// KeepHidden returns channels as a client sent them back, with what answers
// hide taken from stored, the channels the budget has:
//   - a URL in RedactURL's form becomes the full URL of a stored channel of
//     that form, with its secret unless the client sent a new one or none
//     (the n-th such URL sent takes the n-th stored channel of that form, so
//     that each keeps its own URL and secret however many share a host);
//   - a secret equal to SecretMask becomes the secret of the stored channel
//     with that URL, or none.
//
// A redacted URL that matches no stored channel is left as it is, for
// Validate to refuse.
func KeepHidden(sent, stored []Channel) []Channel {
	out := make([]Channel, len(sent))
	used := make([]bool, len(stored))
	for i, c := range sent {
		out[i] = c
		if IsRedacted(c.WebhookURL) {
			for j, old := range stored {
				if !used[j] && RedactURL(old.WebhookURL) == c.WebhookURL {
					used[j] = true
					out[i].WebhookURL = old.WebhookURL
					if c.Secret == SecretMask {
						out[i].Secret = old.Secret
					}
					break
				}
			}
		}
		if out[i].Secret != SecretMask {
			continue
		}
		out[i].Secret = ""
		for _, old := range stored {
			if old.WebhookURL == out[i].WebhookURL {
				out[i].Secret = old.Secret
				break
			}
		}
	}
	return out
}
