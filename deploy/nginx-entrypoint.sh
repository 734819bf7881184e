#!/bin/sh
# Entrypoint of the `lb` service (docker-compose.yml): points nginx's resolver at the DNS server the
# container engine wrote into this container's /etc/resolv.conf, then runs the command (nginx).
# Docker's embedded DNS is 127.0.0.11 and Podman's (aardvark-dns) the network's gateway, so the
# address cannot be written into nginx.conf. POSIX sh only: busybox ash in nginx:*-alpine, dash in
# Debian-based images.
set -eu

out=/etc/nginx/resolver.conf
resolver=""
while read -r key address _ || [ -n "$key" ]; do # also a last line with no newline
  [ "$key" = nameserver ] || continue
  # Only the first: it is the engine's, the one that knows `replica`. Podman lists the host's servers
  # after its own, and nginx takes turns between all the servers it is given: those would answer
  # "Host not found" for `replica` (7 of 20 requests were a 503 that way under Podman 4.3).
  case $address in
  *:*) resolver="[$address]" ;; # nginx wants IPv6 addresses in brackets
  *) resolver=$address ;;
  esac
  break
done </etc/resolv.conf

if [ -z "$resolver" ]; then
  echo "nginx-entrypoint: no nameserver in /etc/resolv.conf; cannot resolve the replicas" >&2
  exit 1
fi

# Answers are cached for 10 s, so replicas that are added, removed or restarted with a new IP are
# picked up; AAAA lookups off, the replicas are reached over IPv4.
printf 'resolver %s valid=10s ipv6=off;\n' "$resolver" >"$out"
echo "nginx-entrypoint: $(cat "$out")"
exec "$@"
