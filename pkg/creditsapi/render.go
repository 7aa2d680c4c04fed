package creditsapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// problemFor is the one place where errors become HTTP statuses and problem
// codes. notFound names what a missing thing is (user_not_found,
// hold_not_found, entry_not_found).
func problemFor(err error, notFound string) Problem {
	switch {
	case err == nil:
		return Problem{Status: http.StatusOK}
	case errors.Is(err, ledger.ErrInsufficientCredits):
		p := problem(http.StatusConflict, string(InsufficientCredits), "not enough credits available")
		if ie, ok := errors.AsType[*ledger.InsufficientError](err); ok {
			p.Available = ptr(ie.Available)
		}
		return p
	case errors.Is(err, ledger.ErrExceedsRefundable):
		p := problem(http.StatusConflict, string(ExceedsRefundable), "more than is left of the debit to refund")
		if re, ok := errors.AsType[*ledger.RefundableError](err); ok {
			p.Refundable = ptr(re.Refundable)
		}
		return p
	case errors.Is(err, ledger.ErrAccountClosed):
		return problem(http.StatusConflict, string(AccountClosed), "the user was deleted; the account is closed")
	case errors.Is(err, ledger.ErrHoldExpired):
		return problem(http.StatusConflict, string(HoldExpired), "the hold expired")
	case errors.Is(err, ledger.ErrHoldNotActive):
		return problem(http.StatusConflict, string(HoldNotActive), "the hold was captured or voided already")
	case errors.Is(err, ledger.ErrNotADebit):
		return problem(http.StatusConflict, string(NotADebit), "only a debit or a capture can be refunded")
	case errors.Is(err, ledger.ErrIdempotencyKeyReused):
		return problem(http.StatusUnprocessableEntity, string(IdempotencyKeyReused),
			"this Idempotency-Key was used for another request; use a new key for a new request")
	case errors.Is(err, ledger.ErrInvalidRequest):
		return problem(http.StatusBadRequest, string(InvalidRequest), err.Error())
	case errors.Is(err, ledger.ErrNotFound):
		return problem(http.StatusNotFound, notFound, err.Error())
	case errors.Is(err, ledger.ErrUnavailable):
		return problem(http.StatusServiceUnavailable, string(Unavailable), "temporarily unavailable; retry with the same Idempotency-Key")
	}
	return problem(http.StatusInternalServerError, "internal", "internal error")
}

// problem is an RFC 9457 problem with a stable code.
func problem(status int, code, detail string) Problem {
	p := Problem{Type: "https://creditgate.dev/problems/" + code, Title: http.StatusText(status), Status: status, Code: ProblemCode(code)}
	if detail != "" {
		p.Detail = &detail
	}
	return p
}

func writeProblem(w http.ResponseWriter, p Problem) {
	b, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_, _ = w.Write(b)
}

// renderer renders an operation's result, or its business refusal, as the
// answer stored under its idempotency key. It does no I/O.
func renderer(okStatus int) ledger.Render {
	return func(v any, err error) ledger.Answer {
		if err != nil {
			p := problemFor(err, "")
			b, _ := json.Marshal(p)
			return ledger.Answer{Status: p.Status, Body: b}
		}
		var body any
		switch r := v.(type) {
		case ledger.EntryView:
			body = toEntry(r)
		case ledger.Hold:
			body = toHold(r)
		default:
			body = v
		}
		b, _ := json.Marshal(body)
		return ledger.Answer{Status: okStatus, Body: b}
	}
}

func toBalance(b ledger.Balance) Balance {
	out := Balance{User: b.ClerkID, Available: b.Available, Held: b.Held, Used: b.Used, Version: b.Version}
	if b.NextExpiry != nil {
		out.NextExpiry = &struct {
			Amount    int64     `json:"amount"`
			ExpiresAt time.Time `json:"expires_at"`
		}{Amount: b.NextExpiry.Amount, ExpiresAt: b.NextExpiry.At.UTC()}
	}
	return out
}

func toEntry(e ledger.EntryView) Entry {
	out := Entry{EntryId: entryID(e.ID), User: e.ClerkID, Type: EntryType(e.Type), Kind: EntryKind(e.Kind),
		Reason: e.Reason, Amount: e.Amount, BalanceAfter: e.BalanceAfter, CreatedAt: e.CreatedAt.UTC()}
	if e.Reference != "" {
		out.Reference = ptr(e.Reference)
	}
	if e.Actor != "" {
		out.Actor = ptr(e.Actor)
	}
	if len(e.Metadata) > 0 {
		var m map[string]any
		if json.Unmarshal(e.Metadata, &m) == nil {
			out.Metadata = &m
		}
	}
	if e.RefundOf != 0 {
		out.RefundOf = ptr(entryID(e.RefundOf))
	}
	if e.HoldID != 0 {
		out.HoldId = ptr(holdID(e.HoldID))
	}
	if !e.ExpiresAt.IsZero() && (e.Kind == ledger.KindGrant || e.Kind == ledger.KindRefund) {
		out.ExpiresAt = ptr(e.ExpiresAt.UTC())
	}
	return out
}

func toHold(h ledger.Hold) Hold {
	out := Hold{HoldId: holdID(h.ID), User: h.ClerkID, Amount: h.Amount, Captured: h.Captured, Status: HoldStatus(h.Status),
		Reason: h.Reason, ExpiresAt: h.ExpiresAt.UTC(), CreatedAt: h.CreatedAt.UTC()}
	if h.Reference != "" {
		out.Reference = ptr(h.Reference)
	}
	if !h.FinishedAt.IsZero() {
		out.FinishedAt = ptr(h.FinishedAt.UTC())
	}
	if h.CaptureEntryID != 0 {
		out.CaptureEntryId = ptr(entryID(h.CaptureEntryID))
	}
	return out
}

// Renderer is the renderer the API stores answers with, for tools that drive
// the store directly (the benchmark's capture of a debit's SQL).
func Renderer(okStatus int) ledger.Render { return renderer(okStatus) }
