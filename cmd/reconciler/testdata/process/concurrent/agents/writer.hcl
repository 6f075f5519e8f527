agent "writer" {
  description = "Write the prompt to out/round.txt"
  provider    = provider.exec.local
  command     = ["sh", "tools/write-round.sh"]
  prompt      = file("prompts/round.md")

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["out/**"]
  }
}
