agent "reviewer" {
  model = "small"
  schedule = "@hourly"
}
