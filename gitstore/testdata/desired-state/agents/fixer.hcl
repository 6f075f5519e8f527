agent "fixer" {
  model = "large"
}
