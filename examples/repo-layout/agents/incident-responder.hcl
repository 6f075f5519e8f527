# A model-backed agent: when Alertmanager reports high latency on the
# payments API, it reads the alert, the service's config and its staging
# manifests, writes its diagnosis to incidents/, and proposes a config fix
# that a person reviews. Point it at any OpenAI-compatible endpoint (see
# README.md); examples/incident/ in the reconciler's source runs the
# whole flow.
agent "incident-responder" {
  description = "Propose a config fix for payments-api latency alerts"
  provider    = provider.openai.default
  model       = "gpt-4o-mini"
  prompt      = templatefile("prompts/incident-responder.md", { service = "payments-api" })
  tools       = ["list_files", "read_file", "search", "edit_file", "write_file", "prometheus_query", "finish"]
  prometheus  = "main" # prometheus_query confirms the diagnosis against the metrics (providers.hcl)

  trigger {
    on_alert {
      match    = { alertname = "PaymentsHighLatency" }
      match_re = { severity = "warning|critical" }
    }
  }

  # What it may read and change: the service's config, its staging
  # manifests, and the incident notes it writes its diagnosis to.
  scope {
    paths = ["config/payments-api.env", "deploy/staging/**", "incidents/**"]
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
