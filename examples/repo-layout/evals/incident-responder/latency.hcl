# The incident-responder is a model agent. Its scenario is replayed from
# evals/recordings/incident-responder/ (the agent's transcript of a run on
# this alert), so it runs offline in CI; when the agent's block, prompt or
# provider changes, the recording no longer matches and reconciler eval asks
# the provider again (reconciler eval --record evals/recordings records it).

scenario "latency alert raises the cache TTL" {
  trigger = "alert"
  input   = file("alert-firing.json")

  expect {
    changed      = ["config/payments-api.env", "incidents/*-payments-api-latency.md"]
    unchanged    = ["deploy/**"]
    contains     = ["CACHE_TTL=120s", "PaymentsHighLatency"]
    not_matches  = ["(?m)^CACHE_TTL=30s$"] # the old value is gone from the env file
    decision     = "require_approval"
    max_cost_usd = 0.01
    max_steps    = 8
  }
}
