# Who may approve agents' proposals. A reviewed merge by a member is an
# approval; emails are matched against merge commits, forge logins against
# pull request reviews.

group "sre" {
  member "rita" {
    email       = "rita@example.com"
    forge_login = "rita"
  }
  member "sam" {
    email       = "sam@example.com"
    forge_login = "sam"
  }
}

group "payments" {
  member "paula" {
    email       = "paula@example.com"
    forge_login = "paula"
  }
}
