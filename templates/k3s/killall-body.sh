# Follows k3s's install.sh create_killall (k3s-io/k3s 866d743, install.sh:800-898) step by
# step; only the `set -x` tracing is left out.
K3S_DATA_DIR=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
# install.sh:809-811: k3s's own tools go after the host's in PATH, never before.
for bin in "$K3S_DATA_DIR"/data/*/bin/; do
  [ -d "$bin" ] && export PATH="$PATH:$bin:${bin}aux"
done
# install.sh:815-821
for service in /etc/systemd/system/k3s*.service; do
  [ -s "$service" ] && systemctl stop "$(basename "$service")"
done
for service in /etc/init.d/k3s*; do
  [ -x "$service" ] && "$service" stop
done
# install.sh:823-845: the whole process tree of every shim, grandchildren included.
pschildren() {
  ps -e -o ppid= -o pid= | sed -e 's/^\s*//g; s/\s\s*/\t/g;' | grep -w "^$1" | cut -f2
}
pstree() {
  for pid in "$@"; do
    echo "$pid"
    for child in $(pschildren "$pid"); do
      pstree "$child"
    done
  done
}
killtree() {
  kill -9 $(pstree "$@") 2>/dev/null
}
# install.sh:868-872
getshims() {
  ps -e -o pid= -o args= | sed -e 's/^ *//; s/\s\s*/\t/;' | grep -w "${K3S_DATA_DIR}"'/data/[^/]*/bin/containerd-shim' | cut -f1
}
killtree $(getshims)
# install.sh:874-885: a mount is removed only once it is unmounted (`&&`): a busy volume
# mount (Longhorn, CSI) that does not unmount keeps its contents.
do_unmount_and_remove() {
  while read -r _ path _; do
    case "$path" in $1*) echo "$path" ;; esac
  done < /proc/self/mounts | sort -r | xargs -r -n 1 sh -c 'umount -f "$0" && rm -rf "$0"'
}
do_unmount_and_remove '/run/k3s'
do_unmount_and_remove '/var/lib/kubelet/pods'
do_unmount_and_remove '/var/lib/kubelet/plugins'
do_unmount_and_remove '/run/netns/cni-'
# install.sh:887-888
ip netns show 2>/dev/null | grep cni- | xargs -r -n 1 ip netns delete
# install.sh:847-866
ip link show 2>/dev/null | grep 'master cni0' | while read -r ignore iface ignore; do
  iface=${iface%%@*}
  [ -z "$iface" ] || ip link delete "$iface"
done
for i in cni0 flannel.1 flannel-v6.1 kube-ipvs0 flannel-wg flannel-wg-v6; do
  ip link delete "$i" 2>/dev/null
done
if [ -n "$(command -v tailscale)" ]; then
  tailscale set --advertise-routes=
fi
# install.sh:892-894. Guarded: without iptables-save, an empty input would reach
# iptables-restore.
rm -rf /var/lib/cni/
for t in iptables ip6tables; do
  if command -v "$t-save" >/dev/null 2>&1 && command -v "$t-restore" >/dev/null 2>&1; then
    "$t-save" | grep -v KUBE- | grep -v CNI- | grep -iv flannel | "$t-restore"
  fi
done
