#!/bin/sh
# in_netns.sh CMD ARGS...: runs CMD in a new network namespace with loopback up
# and a TIME-WAIT table of 1024 sockets (see run.sh: why the socket harnesses
# need one). Needs root.
exec unshare -n sh -c 'ip link set lo up && sysctl -qw net.ipv4.tcp_max_tw_buckets=1024 && exec "$0" "$@"' "$@"
