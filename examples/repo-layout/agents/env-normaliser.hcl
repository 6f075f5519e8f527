agent "env-normaliser" {
  description = "Keep config/*.env sorted and free of duplicate keys"
  provider    = provider.exec.local
  command     = ["sh", "tools/normalise-env.sh"]
  prompt      = file("prompts/env-normaliser.md")

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["config/*.env"]
  }

  work_unit {
    kind          = "config-hygiene"
    human_minutes = 10
  }
}
