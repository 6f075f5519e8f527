agent "sorter" {
  description = "Keep config/*.env sorted"
  provider    = provider.exec.local
  command     = ["sh", "tools/sort.sh"]

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["config/*.env"]
  }
}
