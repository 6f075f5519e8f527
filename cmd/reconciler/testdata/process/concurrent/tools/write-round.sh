#!/bin/sh
# Writes the prompt (standard input) to out/round.txt.
set -eu
mkdir -p out
cat > out/round.txt
echo "Record the round"
