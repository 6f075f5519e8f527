scenario "a repeated key keeps its last value" {
  expect {
    changed      = ["config/payments-api.env", "config/ledger-worker.env"]
    contains     = ["DB_POOL_SIZE=20\n"]
    not_contains = ["DB_POOL_SIZE=10", "HTTP_ADDR=:8080 "]
    decision     = "require_approval"
  }
}

scenario "a sorted file is left alone" {
  file "config/payments-api.env" {
    content = "# payments-api configuration\nCACHE_TTL=30s\nDB_POOL_SIZE=20\n"
  }
  file "config/ledger-worker.env" {
    content = "BATCH_SIZE=100\nLOG_LEVEL=info\nQUEUE=ledger-events\n"
  }

  expect {
    unchanged = ["config/**"]
  }
}
