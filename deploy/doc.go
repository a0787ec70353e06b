// Package deploy holds no code. Its tests check the deployment artefacts beside it — the Grafana
// dashboard, the Prometheus rules and their promtool tests, the Kubernetes base, the compose stack
// — against each other and against what the service really exports and provisions, so that they
// cannot drift from the code.
package deploy
