# Follows install.sh create_uninstall (k3s-io/k3s 866d743, install.sh:935-966).
K3S_DATA_DIR=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
BIN_DIR=/usr/local/bin
for cmd in kubectl crictl ctr; do
  if [ -L "$BIN_DIR/$cmd" ]; then
    rm -f "$BIN_DIR/$cmd"
  fi
done
# install.sh:941-957: never `rm -rf` through a mount point; what is still mounted stays.
clean_mounted_directory() {
  if ! grep -q " $1" /proc/mounts; then
    rm -rf "$1"
    return 0
  fi
  for path in "$1"/*; do
    if [ -d "$path" ]; then
      if grep -q " $path" /proc/mounts; then
        clean_mounted_directory "$path"
      else
        rm -rf "$path"
      fi
    else
      rm -f "$path"
    fi
  done
}
rm -rf /etc/rancher/k3s
rm -rf /run/k3s
rm -rf /run/flannel
clean_mounted_directory "$K3S_DATA_DIR"
# install.sh:964 runs `rm -rf /var/lib/kubelet`; the same care as for the data directory,
# so a pod volume killall could not unmount keeps its contents.
clean_mounted_directory /var/lib/kubelet
rmdir /var/lib/rancher 2>/dev/null
rm -f "$BIN_DIR/k3s" "$BIN_DIR/k3s-killall.sh" "$BIN_DIR/k3s-uninstall.sh" "$BIN_DIR/k3s-agent-uninstall.sh"
# bootstrap's own: a binary staged for an upgrade that did not happen.
rm -f "$BIN_DIR/.k3s.bootstrap-staged" "$BIN_DIR"/.*.bootstrap-upload
