//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// selftestEventType is the event type `webhook selftest` sends (cmd/webhook):
// one the webhook stores as ignored.
const selftestEventType = "creditgate.selftest"

// The chart's own smoke test, run as an operator runs it after an install:
// it must prove the signature and database paths through the Service and
// leave the ledger exactly as it was.
var _ = Describe("helm test", Ordered, Label(LabelSmoke), func() {
	It("passes, twice, adding one ignored selftest event per run and nothing to the ledger", func(ctx SpecContext) {
		selftests := func() int {
			return count(ctx, "SELECT count(*) FROM webhook_events WHERE event_type = ? AND status = 'ignored' AND clerk_user_id IS NULL",
				selftestEventType)
		}
		for i := 1; i <= 2; i++ {
			By(fmt.Sprintf("helm test, run %d", i))
			before, events := ledgerChecksums(ctx), selftests()
			// No --logs: the test Pods are deleted when they pass
			// (hook-succeeded); a failed one is kept and dumpDiagnostics
			// prints its log.
			out := run(env.helm, "test", env.release, "--namespace", env.namespace, "--timeout", "3m")
			GinkgoWriter.Println(out)
			Expect(out).To(MatchRegexp(`(?m)^TEST SUITE:\s+` + env.release + `-test-readyz\n(.*\n){2}Phase:\s+Succeeded`))
			Expect(out).To(MatchRegexp(`(?m)^TEST SUITE:\s+` + env.release + `-test-selftest\n(.*\n){2}Phase:\s+Succeeded`))

			after := ledgerChecksums(ctx)
			Expect(after["users"]).To(Equal(before["users"]), "helm test changed users")
			Expect(after["credit_transactions"]).To(Equal(before["credit_transactions"]), "helm test changed credit_transactions")
			Expect(selftests()).To(Equal(events+1), "one ignored %s event per helm test run", selftestEventType)
		}
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(8*time.Minute))
})

// ledgerChecksums is a count and an md5 of every row of users and
// credit_transactions. Only a delivery or a reconciler run writes them (the
// outbox workers write clerk_metadata_outbox alone), and the reconciler
// CronJob is suspended in the suite, so between two specs they stay still.
func ledgerChecksums(ctx context.Context) map[string]string {
	GinkgoHelper()
	out := map[string]string{}
	for _, t := range []string{"users", "credit_transactions"} {
		var v string
		Expect(env.db.NewRaw(fmt.Sprintf(
			"SELECT count(*) || ':' || COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM %s t", t)).
			Scan(ctx, &v)).To(Succeed())
		out[t] = v
	}
	return out
}
