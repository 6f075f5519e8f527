# A model-backed agent: when Alertmanager reports high latency on the
# payments API, it reads the service's config and manifests and proposes a
# config fix. Point it at any OpenAI-compatible endpoint (see README.md).
agent "incident-responder" {
  description = "Propose a config fix for payments-api latency alerts"
  provider    = provider.openai.default
  model       = "gpt-4o-mini"
  prompt      = templatefile("prompts/incident-responder.md", { service = "payments-api" })
  tools       = ["list_files", "read_file", "search", "edit_file", "finish"]

  trigger {
    on_alert {
      match    = { alertname = "PaymentsHighLatency" }
      match_re = { severity = "warning|critical" }
    }
  }

  scope {
    paths = ["config/payments-api.env", "deploy/staging/**"]
  }

  limits {
    max_steps  = 12
    max_tokens = 60000
    timeout    = "5m"
  }

  work_unit {
    kind          = "incident-remediation"
    human_minutes = 45
  }
}
