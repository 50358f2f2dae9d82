#!/bin/sh
# Start the seed's three nodes as Lima VMs and write an inventory for them.
#   vagrant/lima/up.sh            # start (or reuse) master-1, worker-1, worker-2
#   vagrant/lima/up.sh down       # delete them
set -eu
here=$(cd "$(dirname "$0")" && pwd)
key=${BOOTSTRAP_SSH_KEY:-$HOME/.ssh/id_ed25519}
version=${BOOTSTRAP_K3S_VERSION:-v1.36.3+k3s1}
nodes="master-1 worker-1 worker-2"

command -v limactl >/dev/null || { echo "limactl not found: install Lima (https://lima-vm.io)" >&2; exit 1; }
if [ "${1:-}" = down ]; then
  for n in $nodes; do limactl delete --force "bs-$n" || true; done
  rm -f "$here/inventory.toml" "$here/known_hosts"
  exit 0
fi
[ -f "$key.pub" ] || { echo "$key.pub not found: create a key with ssh-keygen -t ed25519 or set BOOTSTRAP_SSH_KEY" >&2; exit 1; }

for n in $nodes; do
  if ! limactl list -q 2>/dev/null | grep -qx "bs-$n"; then
    limactl start --tty=false --name="bs-$n" --set ".param.OperatorKey = \"$(cat "$key.pub")\"" "$here/k3s-node.yaml"
  else
    limactl start --tty=false "bs-$n" >/dev/null 2>&1 || true
  fi
done

: > "$here/known_hosts"
{
  echo "# Written by vagrant/lima/up.sh"
  echo "[cluster]"
  echo "name = \"lima\""
  echo "k3s_version = \"$version\""
  echo
  echo "[install]"
  echo "source = \"download\""
  echo
  echo "[ssh]"
  echo "user = \"deploy\""
  echo "identity_file = \"$key\""
  echo "known_hosts = \"$here/known_hosts\""
  echo "host_key_policy = \"strict\""
} > "$here/inventory.toml"
for n in $nodes; do
  addr=$(limactl shell "bs-$n" ip -4 -o addr show lima0 | awk '{print $4}' | cut -d/ -f1)
  [ -n "$addr" ] || { echo "bs-$n has no address on the shared network (lima0)" >&2; exit 1; }
  ssh-keyscan -T 10 -t ed25519 "$addr" 2>/dev/null | grep -v '^#' >> "$here/known_hosts"
  role=agent; [ "$n" = master-1 ] && role=server
  # k3s must use the shared network (lima0), not the user-mode NIC, for node addresses and flannel.
  printf '\n[[node]]\nname = "%s"\nhost = "%s"\nrole = "%s"\nconfig = { "node-ip" = "%s", "flannel-iface" = "lima0" }\n' \
    "$n" "$addr" "$role" "$addr" >> "$here/inventory.toml"
done
echo "wrote $here/inventory.toml"
