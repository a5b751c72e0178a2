# Sourced by programs that the process launcher runs: reports a job's status
# to enac-cd with only bash (its /dev/tcp), as the ansible image does with curl.
#
#   cd_callback STATUS OUTPUT APPEND
#
# STATUS is running, success, error or finished; OUTPUT is JSON-string text
# (write a newline as \n); APPEND is true or false. Uses CD_CALLBACK_URL
# (http:// only), CD_CALLBACK_TOKEN and CD_JOB_ID from the launcher. Retries
# for about 30 s while the service is down or answers 5xx (a restart); each
# report carries an Idempotency-Key, so a retry whose first answer was lost
# is not appended twice.

cd_callback() {
  local body="{\"job_id\":\"$CD_JOB_ID\",\"status\":\"$1\",\"output\":\"$2\",\"append\":$3}"
  local rest=${CD_CALLBACK_URL#http://}
  local hostport=${rest%%/*}
  local path=/${rest#*/}
  local host=${hostport%:*} port=${hostport##*:}
  local attempt status_line
  local key="$CD_JOB_ID-$$-$RANDOM$RANDOM-$SECONDS"
  for attempt in $(seq 1 150); do
    if exec 3<>"/dev/tcp/$host/$port"; then
      printf 'POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "$path" "$hostport" "$CD_CALLBACK_TOKEN" "$key" "${#body}" "$body" >&3
      read -r status_line <&3
      exec 3>&-
      echo "callback $1 -> ${status_line%$'\r'}"
      case "$status_line" in
        *" 5"??*) ;;
        *) return 0 ;;
      esac
    fi 2>/dev/null
    sleep 0.2
  done
  echo "callback $1 failed" >&2
  return 1
}
