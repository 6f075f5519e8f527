agent "churner" {
  description = "Write config/churn.env"
  provider    = provider.exec.local
  command     = ["sh", "tools/churn.sh"]

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["config/**"]
  }

  work_unit {
    kind          = "churn"
    human_minutes = 5
  }
}
