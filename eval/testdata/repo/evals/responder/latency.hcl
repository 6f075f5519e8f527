scenario "latency alert raises the cache TTL" {
  trigger = "alert"
  input   = file("alert.json")

  expect {
    changed      = ["config/app.env"]
    unchanged    = ["config/other.env"]
    contains     = ["CACHE_TTL=120s"]
    not_contains = ["CACHE_TTL=30s"]
    matches      = ["(?m)^CACHE_TTL=[0-9]+s$"]
    decision     = "require_approval"
    max_cost_usd = 0.01
    max_steps    = 4
  }
}
