//! Uninstall k3s from hosts the way `k3s-killall.sh` and `k3s-uninstall.sh`
//! do (reference/k3s-facts.md §2.6–2.7): stop every k3s unit, kill the
//! containerd shims, unmount and remove what k3s mounted, delete the CNI
//! interfaces and iptables rules, disable and remove the units, and remove
//! the binary, links, config and data. Like the uninstall script it keeps
//! `/etc/rancher/node` (the node password) and never touches the cluster: the
//! callers delete the Node through the API.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::apply::{HostSpec, UpSpec};
use crate::k3s::Role;
use crate::report::Reporter;
use crate::ssh::{Cmd, Session};

/// Stop and remove k3s from this host; idempotent (a clean host stays clean).
pub const UNINSTALL_SCRIPT: &str = r#"set -u
K3S_DATA_DIR=/var/lib/rancher/k3s
BIN_DIR=/usr/local/bin
for d in "$K3S_DATA_DIR"/data/*/bin "$K3S_DATA_DIR"/data/*/bin/aux; do [ -d "$d" ] && PATH="$d:$PATH"; done
export PATH
# k3s-killall.sh
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
# k3s-uninstall.sh / k3s-agent-uninstall.sh
for s in k3s k3s-agent; do
  if [ -e "/etc/systemd/system/$s.service" ] || systemctl cat "$s" >/dev/null 2>&1; then
    systemctl disable "$s" >/dev/null 2>&1
    systemctl reset-failed "$s" >/dev/null 2>&1
  fi
  rm -f "/etc/systemd/system/$s.service" "/etc/systemd/system/$s.service.env"
done
systemctl daemon-reload 2>/dev/null
for l in kubectl crictl ctr; do [ -L "$BIN_DIR/$l" ] && rm -f "$BIN_DIR/$l"; done
for m in $(awk -v p="$K3S_DATA_DIR" 'index($2, p) == 1 {print $2}' /proc/self/mounts 2>/dev/null | sort -r); do umount -f "$m" 2>/dev/null; done
rm -rf /etc/rancher/k3s /run/k3s /run/flannel "$K3S_DATA_DIR" /var/lib/kubelet
rmdir /var/lib/rancher 2>/dev/null
rm -f "$BIN_DIR/k3s" "$BIN_DIR/k3s-killall.sh" "$BIN_DIR/k3s-uninstall.sh" "$BIN_DIR/k3s-agent-uninstall.sh"
# bootstrap's own: a binary staged for an upgrade that did not happen.
rm -f "$BIN_DIR/.k3s.bootstrap-staged" "$BIN_DIR"/.*.bootstrap-upload
left=""
for f in /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service "$BIN_DIR/k3s" /etc/rancher/k3s "$K3S_DATA_DIR" /var/lib/kubelet; do
  [ -e "$f" ] && left="$left $f"
done
if [ -n "$left" ]; then echo "left behind:$left" >&2; exit 1; fi
echo uninstalled
"#;

/// Uninstall k3s on one connected host.
pub async fn uninstall(s: &Session, name: &str, rep: &Reporter) -> Result<()> {
    rep.step(name, "stop and uninstall k3s");
    let out = s
        .exec(
            &Cmd::new(UNINSTALL_SCRIPT)
                .label("uninstall k3s")
                .timeout(Duration::from_secs(180)),
        )
        .await?;
    if !out.success() {
        bail!("{name}: uninstalling k3s failed:\n{}", out.stderr_tail(10));
    }
    rep.change(name, "uninstalled k3s");
    Ok(())
}

/// `bootstrap reset`: uninstall k3s from `hosts` (agents first, in parallel,
/// then servers one at a time). Every host is tried; the error names those
/// that failed.
pub async fn reset_hosts(hosts: &[HostSpec], rep: &Reporter) -> Result<()> {
    let mut errors = Vec::new();
    let agents: Vec<&HostSpec> = hosts
        .iter()
        .filter(|h| h.node.role == Role::Agent)
        .collect();
    let servers: Vec<&HostSpec> = hosts
        .iter()
        .filter(|h| h.node.role == Role::Server)
        .collect();
    for h in hosts {
        rep.host(&h.node.name, h.node.role.command());
    }
    let one = |h: &HostSpec| {
        let h = h.clone();
        async move {
            let s = Session::connect(&h.target).await?;
            uninstall(&s, &h.node.name, rep).await
        }
    };
    let results = futures::future::join_all(agents.iter().map(|h| one(h))).await;
    for (h, r) in agents.iter().zip(results) {
        record(&h.node.name, r, rep, &mut errors);
    }
    for h in servers {
        let r = one(h).await;
        record(&h.node.name, r, rep, &mut errors);
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn record(name: &str, r: Result<()>, rep: &Reporter, errors: &mut Vec<String>) {
    match r {
        Ok(()) => rep.done(name, Ok(())),
        Err(e) => {
            rep.done(name, Err(format!("{e:#}")));
            errors.push(format!("{name}: {e:#}"));
        }
    }
}

/// The hosts a reset works on: every node, or the one named.
pub fn targets(spec: &UpSpec, node: Option<&str>) -> Vec<HostSpec> {
    spec.hosts
        .iter()
        .filter(|h| node.is_none_or(|n| h.node.name == n))
        .cloned()
        .collect()
}
