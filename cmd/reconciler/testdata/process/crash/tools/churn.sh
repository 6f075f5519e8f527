#!/bin/sh
set -eu
echo CHURN=one > config/churn.env
echo "Churn the config"
