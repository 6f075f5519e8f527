policy "config" {
  applies_to  = ["*"]
  enforcement = "hard"

  require_approval "config" {
    condition = anytrue([for f in change.files : glob(f.path, "config/**")])
    reviewers = ["sre"]
    min       = 1
  }

  deny "too-large" {
    condition = change.added + change.removed > 50
    message   = "changes over 50 lines must be made by a person"
  }
}
