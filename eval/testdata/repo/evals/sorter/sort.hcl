scenario "unsorted keys are sorted" {
  file "config/new.env" {
    content = "Z=26\nA=1\n"
  }

  expect {
    changed  = ["config/new.env", "config/other.env"]
    contains = ["A=1\nZ=26\n"]
    decision = "require_approval"
  }
}

scenario "a sorted file is left alone" {
  file "config/other.env" {
    content = "A=1\nB=2\n"
  }
  file "config/app.env" {
    content = "CACHE_TTL=30s\nLOG_LEVEL=info\n"
  }

  expect {
    unchanged = ["**"]
  }
}
