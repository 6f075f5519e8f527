# Who may approve agents' proposals. A merge signed with a member's
# signing_key is that member's approval; in a group with accept_unsigned, an
# unsigned merge by a member's email counts too, recorded as unsigned. Forge
# logins are matched against pull request reviews.

group "sre" {
  # The demo merges without signing. In production leave this false (the
  # default) and give each member a signing_key: then only a merge signed
  # with it (git -c gpg.format=ssh -c user.signingKey=KEY merge -S) counts,
  # and a commit's name and email prove nothing.
  accept_unsigned = true
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
  accept_unsigned = true
  member "paula" {
    email       = "paula@example.com"
    forge_login = "paula"
  }
}
