#!/bin/sh
# GET /cgi-bin/burn?N: N seconds (1..3600, default 5) of one busy CPU, the load that DRS and the
# HAProxy agent react to.
n=${QUERY_STRING:-5}
case "$n" in
  *[!0-9]*) printf 'Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nburn?N takes a whole number of seconds\n'; exit 0 ;;
esac
n=${n#"${n%%[!0]*}"}
[ ${#n} -le 4 ] || n=3600
n=${n:-1}; [ "$n" -ge 1 ] || n=1; [ "$n" -le 3600 ] || n=3600
( timeout "$n" sh -c 'while :; do :; done' ) </dev/null >/dev/null 2>&1 &
printf 'Content-Type: text/plain\r\n\r\n'
echo "burning ${n}s on $(hostname)"
