package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/webhook"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// selftestEventType is the type of the event `webhook selftest` sends. It is
// not a Clerk event type, so the webhook ignores it (200 "ignored"): the event
// proves the signature path and a database write, and moves no credit. Each
// run leaves one ignored row in webhook_events with this event_type.
const selftestEventType = "creditgate.selftest"

// selftestTimeout bounds the whole delivery; the webhook's own deadline per
// delivery is 10s.
const selftestTimeout = 15 * time.Second

// selftest POSTs one signed selftestEventType event to url (the webhook's
// /api/webhooks/clerk) with the first secret of CLERK_WEBHOOK_SIGNING_SECRET,
// as Svix would, and succeeds only on 200 "ignored" for that very delivery.
// The helm test Pod runs it with the release's secret: the image has no
// shell or curl.
func selftest(ctx context.Context, url string, getenv func(string) string, stdout io.Writer) error {
	raw := getenv("CLERK_WEBHOOK_SIGNING_SECRET")
	if strings.TrimSpace(raw) == "" {
		return errors.New("selftest: CLERK_WEBHOOK_SIGNING_SECRET is required: the secret the webhook verifies with")
	}
	secrets, err := webhook.ParseSecrets(raw)
	if err != nil {
		return fmt.Errorf("selftest: CLERK_WEBHOOK_SIGNING_SECRET: %w", err)
	}
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("selftest: make a svix-id: %w", err)
	}
	// A new svix-id every run: a repeated one would answer "duplicate".
	id := "msg_selftest_" + hex.EncodeToString(nonce[:])
	now := time.Now()
	body, err := json.Marshal(map[string]any{
		"type":   selftestEventType,
		"object": "event",
		"data":   map[string]any{"object": "selftest", "sent_at": now.UnixMilli()},
	})
	if err != nil {
		return fmt.Errorf("selftest: encode the event: %w", err)
	}
	h, err := svixsender.Sign(secrets[0], svixsender.Message{ID: id, Body: body}, now)
	if err != nil {
		// Never echo the secret.
		return errors.New("selftest: CLERK_WEBHOOK_SIGNING_SECRET: secret 1 is not valid base64 after whsec_")
	}

	ctx, cancel := context.WithTimeout(ctx, selftestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("selftest: %w", err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("selftest POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(answer))
	fmt.Fprintf(stdout, "%s %s\n", resp.Status, text)

	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("selftest POST %s: %s: the webhook does not verify with this CLERK_WEBHOOK_SIGNING_SECRET "+
			"(pods started before the Secret changed? `kubectl rollout restart` them)", url, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("selftest POST %s: %s, want 200 %q", url, resp.Status, ledger.OutcomeIgnored)
	}
	var res ledger.Result
	if err := json.Unmarshal(answer, &res); err != nil {
		return fmt.Errorf("selftest POST %s: the answer is not creditgate's: %w", url, err)
	}
	if res.Status != ledger.OutcomeIgnored || res.SvixID != id || res.CreditsGranted != 0 {
		return fmt.Errorf("selftest POST %s: status %q for svix-id %q granting %d, want %q for %q granting 0",
			url, res.Status, res.SvixID, res.CreditsGranted, ledger.OutcomeIgnored, id)
	}
	fmt.Fprintf(stdout, "selftest ok: signature verified, event %s stored as %s (%s), no credit moved\n", id, res.Status, selftestEventType)
	return nil
}
