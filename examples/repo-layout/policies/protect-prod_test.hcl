# Tests of protect-prod.hcl. Run them with: reconciler policy test
# Each test is a change an agent might propose and the decision the
# policies must reach on it.

test "production change needs an SRE" {
  agent = "image-pinner"

  change {
    file {
      path    = "deploy/prod/payments-api.yaml"
      added   = 1
      removed = 1
    }
  }

  expect {
    decision  = "require_approval"
    rules     = ["protect-prod/production"]
    reviewers = { sre = 1 }
  }
}

test "staging change needs the default reviewer" {
  agent = "image-pinner"

  change {
    file {
      path    = "deploy/staging/payments-api.yaml"
      added   = 1
      removed = 1
    }
  }

  expect {
    decision  = "require_approval"
    rules     = ["builtin/one-review"]
    reviewers = { any = 1 }
  }
}

test "secrets are never touched" {
  agent = "image-pinner"

  change {
    file {
      path   = "deploy/staging/secrets/payments-db.yaml"
      status = "added"
      added  = 12
    }
  }

  expect {
    decision = "deny"
    rules    = ["protect-prod/secrets"]
  }
}

test "change over 400 lines is denied" {
  agent = "image-pinner"

  change {
    file {
      path    = "deploy/staging/payments-api.yaml"
      added   = 300
      removed = 101
    }
  }

  expect {
    decision = "deny"
    rules    = ["protect-prod/too-large"]
  }
}

test "change of exactly 400 lines is allowed" {
  agent = "image-pinner"

  change {
    file {
      path    = "deploy/staging/payments-api.yaml"
      added   = 300
      removed = 100
    }
  }

  expect {
    decision  = "require_approval"
    reviewers = { any = 1 }
  }
}
