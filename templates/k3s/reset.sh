set -u
{% include "k3s/killall-body.sh" %}
for s in k3s k3s-agent; do
  if [ -e "/etc/systemd/system/$s.service" ] || systemctl cat "$s" >/dev/null 2>&1; then
    systemctl disable "$s" >/dev/null 2>&1
    systemctl reset-failed "$s" >/dev/null 2>&1
  fi
  rm -f "/etc/systemd/system/$s.service" "/etc/systemd/system/$s.service.env"
done
systemctl daemon-reload 2>/dev/null
{% include "k3s/remove-body.sh" %}
left=""
for f in /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service "$BIN_DIR/k3s" /etc/rancher/k3s "$K3S_DATA_DIR" /var/lib/kubelet; do
  [ -e "$f" ] && left="$left $f"
done
if [ -n "$left" ]; then echo "left behind:$left" >&2; exit 1; fi
echo uninstalled
