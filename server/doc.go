// Package server is the reconciler's daemon: one loop that runs reconcile
// passes, fed by a jittered ticker and by a persisted trigger queue, and
// the HTTP surface around it (DESIGN §5).
//
// The loop is the only caller of Pass. Webhooks never run a pass: an
// Alertmanager notification or a manual run request is written to the
// queue (on disk, atomically, before the sender gets its 202) and wakes
// the loop; a git push only wakes it. The loop hands every queued request
// to each pass and drops a request once the pass has answered it with no
// outcome pending. It requeues at the interval, at the pass's NextDue when
// that is sooner, at once while requests wait and the last pass answered
// some, and with exponential backoff after a failed pass, which it logs
// once at error level until the error changes or a pass succeeds.
//
// Routes: GET /healthz (the process lives), GET /readyz (200 only while
// the last pass succeeded, and so the ledger was trusted; 503 with the
// cause otherwise), GET /metrics, GET /api/v1/status, POST
// /hooks/alertmanager, POST /hooks/git and POST /api/v1/agents/{name}/runs.
// The hook and API routes need the shared secret (Config.Secret); without
// one they answer 403 and nothing is queued. Their bodies and request rates
// are bounded, and every refusal has a JSON body {"error": "..."}.
package server
