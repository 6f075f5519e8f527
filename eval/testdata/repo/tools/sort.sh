#!/bin/sh
# Sort every config/*.env in place.
for f in config/*.env; do
  sort -o "$f" "$f"
done
echo "Sort config/*.env"
