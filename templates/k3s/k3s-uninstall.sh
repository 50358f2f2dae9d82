#!/bin/sh
# Written by bootstrap, as k3s's install.sh writes it: uninstalls {{ service }}
# and, unless another k3s service remains on this host, k3s itself. It keeps
# /etc/rancher/node and does not touch the cluster (delete the Node there).
[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
set -u
/usr/local/bin/k3s-killall.sh
systemctl disable {{ service }} >/dev/null 2>&1
systemctl reset-failed {{ service }} >/dev/null 2>&1
rm -f /etc/systemd/system/{{ service }}.service /etc/systemd/system/{{ service }}.service.env
systemctl daemon-reload 2>/dev/null
trap 'rm -f /usr/local/bin/{{ service }}-uninstall.sh' EXIT
# install.sh:930: either kind of unit is enough to keep k3s.
if (ls /etc/systemd/system/k3s*.service || ls /etc/init.d/k3s*) >/dev/null 2>&1; then
  echo "Additional k3s services installed, skipping uninstall of k3s"
  exit 0
fi
{% include "k3s/remove-body.sh" %}
