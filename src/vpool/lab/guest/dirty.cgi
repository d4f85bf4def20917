#!/bin/sh
# GET /cgi-bin/dirty?MB=64&seconds=30 starts (or replaces) the memory dirtier; seconds=0 stops it.
if ! args=$(dirty-args "$QUERY_STRING" 2>&1); then
  printf 'Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n%s\n' "$args"
  exit 0
fi
set -- $args
pid=$(cat /run/dirty.pid 2>/dev/null)
# The dirtier leads its own process group (setsid), so this also ends the cat it is running.
[ -n "$pid" ] && kill -TERM "-$pid" 2>/dev/null
umount -l /run/dirty 2>/dev/null
rm -f /run/dirty.pid /run/dirty.state
printf 'Content-Type: text/plain\r\n\r\n'
if [ "$2" = 0 ]; then
  echo "dirtier stopped on $(hostname)"
  exit 0
fi
setsid dirtier "$1" "$2" </dev/null >/dev/null 2>&1 &
echo $! > /run/dirty.pid
echo "dirtying $1 MiB for $2 s on $(hostname)"
