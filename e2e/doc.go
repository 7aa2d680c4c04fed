// Package e2e holds creditgate's end-to-end suite (build tag e2e): it installs
// the Helm chart on whatever cluster KUBECONFIG points at and checks the
// ledger in PostgreSQL after real signed deliveries. See docs/e2e.md.
package e2e
