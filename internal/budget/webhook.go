package budget

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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
				return fmt.Errorf("webhook %s: %w (last error: %v)", redact(ch.WebhookURL), ctx.Err(), last)
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
	return fmt.Errorf("webhook %s: gave up: %w", redact(ch.WebhookURL), last)
}

func (w *Webhook) post(ctx context.Context, client *http.Client, ch Channel, body []byte, id string) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return false, err
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
		return true, err
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

// redact keeps a webhook URL's scheme and host only: paths of chat webhooks
// are secrets.
func redact(raw string) string {
	req, err := http.NewRequest(http.MethodPost, raw, nil)
	if err != nil {
		return "<bad url>"
	}
	return req.URL.Scheme + "://" + req.URL.Host + "/…"
}
