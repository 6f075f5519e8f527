agent "idler" {
  description = "Read the prompt and change nothing"
  provider    = provider.exec.local
  command     = ["sh", "tools/idle.sh"]
  prompt      = file("prompts/round.md")

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["out/**"]
  }
}
