agent "image-pinner" {
  description = "Pin container images in deploy/ to the digests in deploy/images.lock"
  provider    = provider.exec.local
  command     = ["sh", "tools/pin-images.sh"]
  prompt      = file("prompts/image-pinner.md")

  # Once for every change of this agent's spec, and every weekday morning.
  trigger {
    on_spec_change = true
  }
  trigger {
    schedule = "0 7 * * MON-FRI"
    timezone = "Europe/Berlin"
  }

  scope {
    paths = ["deploy/**"]
  }

  limits {
    timeout = "1m"
  }

  work_unit {
    kind          = "image-pin"
    human_minutes = 20
  }
}
