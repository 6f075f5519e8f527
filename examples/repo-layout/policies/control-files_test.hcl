# Tests of control-files.hcl: agents may not widen their own permissions.

test "agent editing a policy is denied" {
  agent = "image-pinner"

  change {
    file {
      path    = "policies/protect-prod.hcl"
      added   = 1
      removed = 1
    }
  }

  expect {
    decision = "deny"
    # The reconciler's own guard fires as well as the policy that makes
    # the rule visible.
    rules = ["builtin/self-modification", "control-files/control-files"]
  }
}

test "agent adding a provider is denied" {
  agent = "env-normaliser"

  change {
    file {
      path  = "providers.hcl"
      added = 4
    }
    file {
      path  = "config/payments-api.env"
      added = 1
    }
  }

  expect {
    decision = "deny"
    rules    = ["builtin/self-modification", "control-files/control-files"]
  }
}

test "config change by env-normaliser needs one review" {
  agent = "env-normaliser"

  change {
    file {
      path    = "config/payments-api.env"
      added   = 3
      removed = 4
    }
  }

  expect {
    decision  = "require_approval"
    rules     = ["builtin/one-review"]
    reviewers = { any = 1 }
  }
}
