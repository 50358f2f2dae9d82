K3S_DATA_DIR=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
for d in "$K3S_DATA_DIR"/data/*/bin "$K3S_DATA_DIR"/data/*/bin/aux; do [ -d "$d" ] && PATH="$d:$PATH"; done
export PATH
for f in /etc/systemd/system/k3s*.service; do
  [ -s "$f" ] && systemctl stop "${f##*/}" 2>/dev/null
done
shims=$(ps -e -o pid= -o args= 2>/dev/null | awk -v d="$K3S_DATA_DIR/data/" 'index($2, d) == 1 && $2 ~ /containerd-shim/ {print $1}')
for p in $shims; do
  kids=$(ps -o pid= --ppid "$p" 2>/dev/null)
  kill -9 $p $kids 2>/dev/null
done
do_unmount_and_remove() {
  awk -v p="$1" 'index($2, p) == 1 {print $2}' /proc/self/mounts 2>/dev/null | sort -r | while read -r m; do
    umount -f "$m" 2>/dev/null; rm -rf "$m" 2>/dev/null
  done
}
do_unmount_and_remove /run/k3s
do_unmount_and_remove /var/lib/kubelet/pods
do_unmount_and_remove /var/lib/kubelet/plugins
do_unmount_and_remove /run/netns/cni-
if command -v ip >/dev/null 2>&1; then
  ip netns show 2>/dev/null | awk '/^cni-/ {print $1}' | while read -r n; do ip netns delete "$n" 2>/dev/null; done
  ip link show master cni0 2>/dev/null | awk -F': ' '/^[0-9]+:/ {print $2}' | cut -d@ -f1 | while read -r i; do ip link delete "$i" 2>/dev/null; done
  for i in cni0 flannel.1 flannel-v6.1 kube-ipvs0 flannel-wg flannel-wg-v6; do ip link delete "$i" 2>/dev/null; done
fi
rm -rf /var/lib/cni/
for t in iptables ip6tables; do
  if command -v "$t-save" >/dev/null 2>&1 && command -v "$t-restore" >/dev/null 2>&1; then
    "$t-save" 2>/dev/null | grep -v KUBE- | grep -v CNI- | grep -iv flannel | "$t-restore" 2>/dev/null
  fi
done
