//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The credits API in the cluster: in-cluster callers authenticated by their
// projected ServiceAccount tokens (a real TokenReview against this cluster's
// kube-apiserver), and a hold/capture load that a webhook pod's deletion
// must not make capture anything twice.
var _ = Describe("the credits API on Kubernetes", Ordered, func() {
	var s *sender
	BeforeAll(func() {
		s = newSender(env.webhookURL, env.secret, compressedSchedule)
	})

	// newUser creates a user through the webhook (20 signup credits).
	newUser := func(ctx context.Context, id string) {
		GinkgoHelper()
		env.fake.AddUser(fakeUser(id))
		a := s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
		Expect(a.Err).NotTo(HaveOccurred())
		Expect(a.Status).To(Equal(http.StatusOK), a.Body)
	}

	It("serves a Pod by its ServiceAccount token, and refuses one without scopes", Label(LabelAPI, LabelSecurity), func(ctx SpecContext) {
		if env.clientImage == "" {
			Skip("E2E_CLIENT_IMAGE (the echo tool image) is not loaded in this cluster")
		}
		id := uid("api_sa", 0)
		newUser(ctx, id)
		for _, sa := range []string{spenderSA, "e2e-stranger"} {
			if _, err := kubectlE("get", "serviceaccount", sa); err != nil {
				kubectl("create", "serviceaccount", sa)
			}
		}
		call := func(name, sa, key string) string {
			GinkgoHelper()
			return runClientPod(name, sa, "POST", "/v1/users/"+id+"/debits", `{"amount":3,"reason":"generation"}`, key)
		}
		out := call("e2e-api-spender-"+tag(), spenderSA, "sa-"+tag())
		Expect(out).To(HavePrefix("status=201"), out)
		Expect(out).To(ContainSubstring(`"balance_after":17`))
		var actor string
		Expect(env.db.NewRaw("SELECT actor FROM credit_transactions WHERE clerk_id = ? AND kind = 'debit'", id).Scan(ctx, &actor)).To(Succeed())
		Expect(actor).To(Equal(env.namespace + "/" + spenderSA))

		out = call("e2e-api-stranger-"+tag(), "e2e-stranger", "stranger-"+tag())
		Expect(out).To(HavePrefix("status=403"), out)
		Expect(out).To(ContainSubstring(`"code":"forbidden"`))
		available, _ := creditsOf(ctx, id)
		Expect(available).To(Equal(int64(17)))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(5*time.Minute))

	It("captures nothing twice when a webhook pod is deleted during a hold and capture load", Label(LabelAPI, LabelChaos), func(ctx SpecContext) {
		const users = 40
		api := apiURL()
		var mu sync.Mutex
		retried := map[int]int{}
		ids := make([]string, users)
		for i := range ids {
			ids[i] = uid("api_load", i)
			newUser(ctx, ids[i])
			status, body := apiCall(ctx, api, "POST", "/v1/users/"+ids[i]+"/grants", "topup-"+ids[i], `{"amount":1000,"reason":"e2e"}`, retried, &mu)
			Expect(status).To(Equal(http.StatusCreated), body)
		}
		// Every user's client runs hold-2-capture-1 rounds until told to
		// stop: the load outlasts the pod's deletion whatever the speed of
		// this machine. Each request is retried with its own key until it
		// is answered, as a client must.
		pods := webhookPods()
		Expect(pods).NotTo(BeEmpty())
		var wg sync.WaitGroup
		var steps atomic.Int64
		stop := make(chan struct{})
		rounds := make([]int, users)
		for i, id := range ids {
			wg.Go(func() {
				defer GinkgoRecover()
				for r := 0; ; r++ {
					select {
					case <-stop:
						return
					default:
					}
					var hold struct {
						HoldID string `json:"hold_id"`
					}
					status, body := apiCall(ctx, api, "POST", "/v1/users/"+id+"/holds", fmt.Sprintf("hold-%s-%d", id, r),
						`{"amount":2,"ttl_seconds":300,"reason":"generation"}`, retried, &mu)
					Expect(status).To(Equal(http.StatusCreated), body)
					Expect(json.Unmarshal([]byte(body), &hold)).To(Succeed())
					status, body = apiCall(ctx, api, "POST", "/v1/holds/"+hold.HoldID+"/capture", fmt.Sprintf("capture-%s-%d", id, r),
						`{"amount":1}`, retried, &mu)
					Expect(status).To(Equal(http.StatusOK), body)
					Expect(body).To(ContainSubstring(`"status":"captured"`))
					rounds[i] = r + 1
					steps.Add(1)
				}
			})
		}
		Eventually(steps.Load).WithTimeout(2 * time.Minute).Should(BeNumerically(">=", 100))
		kubectl("delete", "pod", pods[0], "--wait=false")
		began := steps.Load()
		kubectl("wait", "--for=delete", "pod/"+pods[0], "--timeout=120s")
		gone := steps.Load()
		Eventually(steps.Load).WithTimeout(2 * time.Minute).Should(BeNumerically(">=", gone+100))
		close(stop)
		wg.Wait()
		GinkgoWriter.Printf("hold/capture load: deletion began after %d rounds, the pod was gone after %d, %d in all; retries by status (0: transport error): %v\n",
			began, gone, steps.Load(), retried)
		Expect(gone).To(BeNumerically(">", began), "no round ran while the pod was going away")

		for i, id := range ids {
			var captures, captured, holds int
			Expect(env.db.NewRaw("SELECT count(*), COALESCE(sum(amount), 0) FROM credit_transactions WHERE clerk_id = ? AND kind = 'capture'", id).
				Scan(ctx, &captures, &captured)).To(Succeed())
			Expect(env.db.NewRaw("SELECT count(*) FROM credit_holds WHERE clerk_id = ?", id).Scan(ctx, &holds)).To(Succeed())
			Expect([]int{captures, captured, holds}).To(Equal([]int{rounds[i], rounds[i], rounds[i]}), "user %s: captures, credits captured, holds", id)
			available, _ := creditsOf(ctx, id)
			Expect(available).To(Equal(int64(1020-rounds[i])), id)
		}
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
		Eventually(webhookPods).WithTimeout(3 * time.Minute).Should(HaveLen(2))
	}, SpecTimeout(8*time.Minute))
})

// spenderSA is the ServiceAccount the suite maps to read+spend.
const spenderSA = "e2e-spender"

// apiURL is the credits API's Service address, reached from this host the
// way the webhook's is (kube-proxy routes ClusterIPs from the node).
func apiURL() string {
	GinkgoHelper()
	ip := strings.TrimSpace(kubectl("get", "service", env.release+"-api", "-o", "jsonpath={.spec.clusterIP}"))
	Expect(ip).NotTo(BeEmpty())
	return "http://" + net.JoinHostPort(ip, "8081")
}

// apiCall sends one API request with the suite's key, retrying with the same
// Idempotency-Key on transport errors and 5xx (a pod going away), and
// returns the final status and body; retries are counted by cause.
func apiCall(ctx context.Context, base, method, path, key, body string, retried map[int]int, mu *sync.Mutex) (int, string) {
	client := &http.Client{Timeout: 15 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader([]byte(body)))
		if err != nil {
			return 0, err.Error()
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+env.apiKey)
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		status := 0
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		if err == nil && status < 500 {
			return status, string(b)
		}
		mu.Lock()
		retried[status]++
		mu.Unlock()
		select {
		case <-ctx.Done():
			return status, fmt.Sprint(err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// apiOnce sends one credits API request with the suite's key and the given
// Idempotency-Key, without retrying.
func apiOnce(ctx context.Context, client *http.Client, base, method, path, body, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+env.apiKey)
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}

// runClientPod runs the echo tool as an in-cluster API client under
// ServiceAccount sa, with a projected token for audience creditgate, and
// returns its one line of output ("status=… body=…").
func runClientPod(name, sa, method, path, body, key string) string {
	GinkgoHelper()
	svc := strings.ToUpper(strings.ReplaceAll(env.release+"-api", "-", "_"))
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "labels": map[string]any{"creditgate.dev/client": "true"}},
		"spec": map[string]any{
			"serviceAccountName": sa, "automountServiceAccountToken": false, "restartPolicy": "Never",
			"volumes": []any{map[string]any{"name": "token", "projected": map[string]any{"sources": []any{
				map[string]any{"serviceAccountToken": map[string]any{"audience": "creditgate", "expirationSeconds": 3600, "path": "token"}},
			}}}},
			"containers": []any{map[string]any{
				"name": "client", "image": env.clientImage, "imagePullPolicy": "IfNotPresent",
				"args": []string{"-call", fmt.Sprintf("http://$(%s_SERVICE_HOST):$(%s_SERVICE_PORT_API)%s", svc, svc, path),
					"-method", method, "-body", body, "-header", "Idempotency-Key: " + key,
					"-bearer-file", "/var/run/secrets/creditgate/token", "-timeout", "60s"},
				"volumeMounts":    []any{map[string]any{"name": "token", "mountPath": "/var/run/secrets/creditgate", "readOnly": true}},
				"securityContext": map[string]any{"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false},
			}},
		},
	}
	b, err := json.Marshal(pod)
	Expect(err).NotTo(HaveOccurred())
	out, err := runStdin(string(b), env.kubectl, "-n", env.namespace, "apply", "-f", "-")
	Expect(err).NotTo(HaveOccurred(), out)
	kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+name, "--timeout=120s")
	return strings.TrimSpace(kubectl("logs", name))
}
