agent "modeler" {
  description = "Set ROUND in config/model.env as the prompt says"
  provider    = provider.openai.scripted
  model       = "scripted-model"
  prompt      = file("prompts/round.md")
  tools       = ["read_file", "edit_file", "finish"]

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["config/model.env"]
  }

  limits {
    max_steps = 6
    timeout   = "1m"
  }
}
