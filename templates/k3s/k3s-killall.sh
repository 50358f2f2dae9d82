#!/bin/sh
# Written by bootstrap, as k3s's install.sh writes it: stops every k3s unit and
# cleans up what they left running (containers, mounts, CNI links, iptables).
[ "$(id -u)" -eq 0 ] || exec sudo K3S_DATA_DIR="${K3S_DATA_DIR:-}" "$0" "$@"
set -u
{% include "k3s/killall-body.sh" %}
