package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// Explain says what the next reconciler run would do about one user, from
// what the store holds (story) and, when a Directory is configured, whether
// Clerk still has the user. It changes nothing.
func (r *Reconciler) Explain(ctx context.Context, st ledger.UserStory) []string {
	var do []string
	now := time.Now()
	for _, e := range st.Events {
		switch e.Status {
		case ledger.StatusFailed:
			if due := e.ReceivedAt.Add(r.Config.Grace); due.After(now) {
				do = append(do, fmt.Sprintf("re-run failed event %s after %s (RECONCILE_GRACE; Svix retries it meanwhile)", e.SvixID, due.UTC().Format(time.RFC3339)))
			} else {
				do = append(do, fmt.Sprintf("re-run failed event %s (attempt %d of %d)", e.SvixID, e.Attempts+1, r.Config.MaxEventAttempts))
			}
		case "dead":
			do = append(do, fmt.Sprintf("nothing for dead event %s: requeue it with `reconciler requeue --svix-id %s` once its cause (last error above) is gone", e.SvixID, e.SvixID))
		}
	}
	hasSignup := false
	for _, e := range st.Entries {
		if e.IdempotencyKey == ledger.SignupKey(st.ClerkID) {
			hasSignup = true
		}
	}
	var inClerk, asked bool
	if r.Directory != nil {
		if found, err := r.Directory.ExistingUsers(ctx, []string{st.ClerkID}); err != nil {
			do = append(do, fmt.Sprintf("(could not ask Clerk about the user: %v)", err))
		} else {
			inClerk, asked = found[st.ClerkID], true
		}
	}
	switch u := st.User; {
	case u == nil && asked && inClerk:
		do = append(do, fmt.Sprintf("create the user with %d signup credits (backfill: Clerk has the user, creditgate does not)", r.Config.SignupCredits))
	case u == nil:
		do = append(do, "nothing: creditgate holds no such user")
	case !u.DeletedAt.IsZero():
		do = append(do, "nothing: the user is deleted (a tombstone is never revived or credited)")
	default:
		if !hasSignup {
			do = append(do, fmt.Sprintf("grant the missing signup credit (%d, key %s)", r.Config.SignupCredits, ledger.SignupKey(st.ClerkID)))
		}
		if asked && !inClerk && r.Config.SweepInterval > 0 {
			do = append(do, "delete the user as user.deleted would (deletion sweep: Clerk no longer has the user)")
		}
		if credits, debits := st.Credits(); u.AvailableCredits != credits-debits || u.UsedCredits != debits {
			do = append(do, fmt.Sprintf("report ledger drift (never fix it): balances %d available, %d used; entries %d credits, %d debits",
				u.AvailableCredits, u.UsedCredits, credits, debits))
		}
	}
	for _, o := range st.Outbox {
		switch o.Status {
		case ledger.OutboxPending:
			do = append(do, fmt.Sprintf("write Clerk metadata %s (attempt %d, due %s)", o.IdempotencyKey, o.Attempts+1, o.NextAttemptAt.UTC().Format(time.RFC3339)))
		case ledger.OutboxDead:
			do = append(do, fmt.Sprintf("nothing for dead Clerk metadata write %s: see the runbook's CreditgateOutboxDead", o.IdempotencyKey))
		}
	}
	if len(do) == 0 {
		do = append(do, "nothing: the user is settled")
	}
	return do
}
