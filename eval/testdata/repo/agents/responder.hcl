agent "responder" {
  description = "Raise the cache TTL of the app when latency alerts fire"
  provider    = provider.openai.default
  model       = "gpt-4o-mini"
  prompt      = "When the app's latency is high, raise CACHE_TTL in config/app.env."
  tools       = ["read_file", "edit_file", "finish"]

  trigger {
    on_alert {
      match = { alertname = "HighLatency" }
    }
  }

  scope {
    paths = ["config/**"]
  }

  limits {
    max_steps = 6
  }
}
