K3S_DATA_DIR=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
BIN_DIR=/usr/local/bin
for l in kubectl crictl ctr; do [ -L "$BIN_DIR/$l" ] && rm -f "$BIN_DIR/$l"; done
for m in $(awk -v p="$K3S_DATA_DIR" 'index($2, p) == 1 {print $2}' /proc/self/mounts 2>/dev/null | sort -r); do umount -f "$m" 2>/dev/null; done
rm -rf /etc/rancher/k3s /run/k3s /run/flannel "$K3S_DATA_DIR" /var/lib/kubelet
rmdir /var/lib/rancher 2>/dev/null
rm -f "$BIN_DIR/k3s" "$BIN_DIR/k3s-killall.sh" "$BIN_DIR/k3s-uninstall.sh" "$BIN_DIR/k3s-agent-uninstall.sh"
# bootstrap's own: a binary staged for an upgrade that did not happen.
rm -f "$BIN_DIR/.k3s.bootstrap-staged" "$BIN_DIR"/.*.bootstrap-upload
