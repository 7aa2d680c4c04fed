//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/onsi/ginkgo/v2"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// The suite delivers through the project's one Svix-like sender
// (pkg/webhook/svixsender) with bodies from pkg/clerk/clerkevent; this file
// only adapts them to the specs' vocabulary.

type message = svixsender.Message

// compressedSchedule is Svix's retry schedule scaled down for a test run.
var compressedSchedule = svixsender.CompressedSchedule

// sender delivers messages like Svix does: a non-2xx answer or a transport
// error is retried on a schedule.
type sender struct{ *svixsender.Sender }

func newSender(url, secret string, schedule []time.Duration) *sender {
	s, err := svixsender.New(url, secret, svixsender.Options{Schedule: schedule, UserAgent: "Svix-Webhooks/1.0 (creditgate e2e)"})
	if err != nil {
		panic(err)
	}
	return &sender{s}
}

// attempt is one delivery attempt's answer, its body as text.
type attempt struct {
	Status int
	Body   string
	Header http.Header
	Err    error
}

func answer(a svixsender.Attempt) attempt {
	return attempt{Status: a.Status, Body: string(a.Body), Header: a.Header, Err: a.Err}
}

// post makes one signed attempt, mutate changing the request (bad input
// specs).
func (s *sender) post(ctx context.Context, m message, signedAt time.Time, mutate func(*http.Request)) attempt {
	return answer(s.Post(ctx, m, signedAt, mutate))
}

// postAnswered makes one signed attempt of m and, should it get no answer at
// all, tries again at once, up to three times, as Svix retries such an
// attempt (a request written into a keep-alive connection just as a draining
// pod closes it idle is lost to an HTTP/1.1 race no server can close). Each
// unanswered attempt is counted in noAnswer and logged. An answer other than
// 2xx is returned as it is, never retried.
func (s *sender) postAnswered(ctx context.Context, m message, noAnswer *atomic.Int64) attempt {
	a := s.post(ctx, m, time.Now(), nil)
	for retry := 0; a.Err != nil && retry < 3 && ctx.Err() == nil; retry++ {
		noAnswer.Add(1)
		ginkgo.GinkgoWriter.Printf("%s: no answer (%v); retried as Svix would\n", m.ID, a.Err)
		a = s.post(ctx, m, time.Now(), nil)
	}
	return a
}

// deliverAll sends every message with concurrency senders and returns the
// messages that never got a 2xx.
func (s *sender) deliverAll(ctx context.Context, msgs []message, concurrency int) []string {
	return s.DeliverAll(ctx, msgs, concurrency)
}

// userCreated is a Clerk user.created message for a new user whose
// version (updated_at, and the event's time) is version.
func userCreated(svixID, clerkID, email string, version int64) message {
	return event(svixID, clerkevent.Event{Type: clerkevent.UserCreated, UserID: clerkID, Email: email,
		At: time.UnixMilli(version), Version: version})
}

func userUpdated(svixID, clerkID, email string, version int64) message {
	return event(svixID, clerkevent.Event{Type: clerkevent.UserUpdated, UserID: clerkID, Email: email,
		At: time.UnixMilli(version), Version: version})
}

func userDeleted(svixID, clerkID string) message {
	return event(svixID, clerkevent.Event{Type: clerkevent.UserDeleted, UserID: clerkID})
}

func event(svixID string, e clerkevent.Event) message {
	return message{ID: svixID, Type: e.Type, UserID: e.UserID, Body: e.MustBody()}
}
