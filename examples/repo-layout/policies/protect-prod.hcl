# Production changes need an SRE; secrets and large changes are refused.
policy "protect-prod" {
  applies_to  = ["*"]
  enforcement = "hard"

  require_approval "production" {
    condition = anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])
    reviewers = ["sre"]
    min       = 1
  }

  deny "secrets" {
    condition = anytrue([for f in change.files : glob(f.path, "**/secrets/**") || endswith(f.path, ".pem")])
    message   = "agents must not touch secrets"
  }

  deny "too-large" {
    condition = change.added + change.removed > 400
    message   = "changes over 400 lines must be split or made by a person"
  }
}
