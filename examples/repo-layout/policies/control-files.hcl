# Agents may not change what agents may do. The reconciler enforces this
# itself too; this policy makes the rule visible and reviewable.
policy "control-files" {
  applies_to  = ["*"]
  enforcement = "hard"

  deny "control-files" {
    condition = anytrue([
      for f in change.files : anytrue([
        for g in ["agents/**", "policies/**", "providers.hcl", "reviewers.hcl", ".reconciler/**"] : glob(f.path, g)
      ])
    ])
    message = "agents may not edit agents/, policies/, providers.hcl, reviewers.hcl or .reconciler/"
  }
}
