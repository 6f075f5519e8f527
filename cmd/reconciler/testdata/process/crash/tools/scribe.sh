#!/bin/sh
# Writes the prompt (standard input) to out/scribe.txt.
set -eu
mkdir -p out
cat > out/scribe.txt
echo "Record the prompt"
