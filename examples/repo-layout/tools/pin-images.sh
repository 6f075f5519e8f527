#!/bin/sh
# Pins container images in deploy/ manifests to the digests recorded in
# deploy/images.lock ("name:tag sha256:<hex>" per line). Prints a summary
# line and the list of pinned images; changes nothing when all are pinned.
set -eu
lock=deploy/images.lock
report=$(mktemp)
trap 'rm -f "$report"' EXIT
find deploy -type f -name '*.yaml' | LC_ALL=C sort | while read -r f; do
  awk -v lockfile="$lock" -v file="$f" -v report="$report" '
    BEGIN {
      while ((getline line < lockfile) > 0) {
        if (line ~ /^[ \t]*#/ || line ~ /^[ \t]*$/) continue
        split(line, p, /[ \t]+/)
        digest[p[1]] = p[2]
      }
    }
    /^[ \t]*(-[ \t]+)?image:[ \t]*/ {
      match($0, /image:[ \t]*/)
      prefix = substr($0, 1, RSTART + RLENGTH - 1)
      ref = substr($0, RSTART + RLENGTH)
      gsub(/["\047]/, "", ref)
      sub(/[ \t]+$/, "", ref)
      if (ref !~ /@sha256:/ && (ref in digest)) {
        print prefix ref "@" digest[ref]
        print file ": " ref " -> " digest[ref] >> report
        next
      }
    }
    { print }
  ' "$f" > "$f.pinned"
  if cmp -s "$f" "$f.pinned"; then rm -f "$f.pinned"; else mv "$f.pinned" "$f"; fi
done
n=$(wc -l < "$report" | tr -d ' ')
if [ "$n" -gt 0 ]; then
  echo "Pin $n container image(s) to digests from deploy/images.lock"
  echo
  echo "Tags can be moved; digests cannot. Pinning makes what runs exactly what"
  echo "was reviewed and scanned."
  echo
  sed 's/^/- /' "$report"
fi
