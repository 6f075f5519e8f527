group "sre" {
  accept_unsigned = true
  member "rita" {
    email = "rita@example.com"
  }
}
