#!/bin/sh
# Reads the prompt and changes nothing.
cat > /dev/null
