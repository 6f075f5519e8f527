# The image-pinner is an exec agent: each scenario runs tools/pin-images.sh
# in the sandbox, on the agent's view of the repository (deploy/**) with the
# scenario's files laid over it. Nothing is recorded: the command is
# deterministic.

scenario "tags are pinned to the approved digests" {
  expect {
    changed   = ["deploy/prod/payments-api.yaml", "deploy/prod/ledger-worker.yaml", "deploy/staging/payments-api.yaml"]
    unchanged = ["deploy/images.lock"]
    contains = [
      "image: ghcr.io/example/payments-api:2.14.1@sha256:5b0c2a8e8f7a91c4d0f3e6b1a2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1",
      "image: docker.io/library/redis:7.2.4@sha256:e422889e156ebea83856b6ff973bfe0c86bce867d80def228044eeecf925592b",
    ]
    # No image is left on a bare tag.
    not_matches = ["(?m)^\\s*(-\\s+)?image:\\s*\"?[^@\"\\s]+\"?\\s*$"]
    # Production manifests need an SRE (policies/protect-prod.hcl).
    decision = "require_approval"
  }
}

scenario "an image missing from the lock is left alone" {
  file "deploy/images.lock" {
    content = "# No digests approved yet.\n"
  }

  expect {
    unchanged = ["**"]
  }
}
