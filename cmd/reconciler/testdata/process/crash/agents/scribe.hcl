agent "scribe" {
  description = "Write the prompt to out/scribe.txt"
  provider    = provider.exec.local
  command     = ["sh", "tools/scribe.sh"]
  prompt      = file("prompts/scribe.md")

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["out/**"]
  }
}
