#!/bin/sh
# Normalises config/*.env: strips trailing whitespace and blank lines, keeps
# the last value of a repeated key (what the services' loaders use), sorts by
# key. Comments are dropped from the body and kept at the top.
set -eu
changed=""
for f in config/*.env; do
  [ -f "$f" ] || continue
  awk '
    { sub(/[ \t\r]+$/, "") }
    /^[ \t]*$/ { next }
    /^#/ { comments = comments $0 "\n"; next }
    {
      key = $0; sub(/=.*/, "", key)
      if (!(key in value)) order[++n] = key
      value[key] = $0
    }
    END {
      printf "%s", comments
      for (i = 1; i <= n; i++) print value[order[i]] | "LC_ALL=C sort -t= -k1,1"
    }
  ' "$f" > "$f.norm"
  if cmp -s "$f" "$f.norm"; then rm -f "$f.norm"; else mv "$f.norm" "$f"; changed="$changed $f"; fi
done
if [ -n "$changed" ]; then
  echo "Normalise$changed"
  echo
  echo "Sorted keys, removed duplicate keys (keeping the last value, which the"
  echo "services load today) and trailing whitespace."
fi
