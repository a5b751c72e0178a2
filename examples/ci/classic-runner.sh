#!/usr/bin/env bash
# A classic runner (cron, Jenkins, a shell script): the deployment secret of
# the app, as the seed's GitHub Action uses it. Exit codes: 0 success,
# 1 error, 2 timeout.
set -euo pipefail
: "${DEPLOYMENT_SECRET:?set DEPLOYMENT_SECRET (the app's deployment_secret)}"
exec enac-cd deploy --url "${CD_URL:-https://cd.example.org}" --deployment-id "${1:?deployment id}" --interval 2 --timeout 480
