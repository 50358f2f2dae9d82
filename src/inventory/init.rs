//! `bootstrap init`: a commented inventory for given hosts, for a person to read, adjust and
//! keep. It only renders text; the caller writes it where it goes.

use super::DEFAULT_K3S_VERSION;

/// What `init` was told.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub name: String,
    pub servers: Vec<String>,
    pub agents: Vec<String>,
    pub user: String,
    pub known_hosts: String,
}

fn quote(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_string()
}

/// The inventory text: the cluster, SSH settings, and one `[[node]]` per host (`server-N`,
/// `agent-N`), with what each setting does and where to go next.
pub fn template(spec: &InitSpec) -> String {
    // `key = value` with its comment, the comments in one column.
    let line = |kv: String, comment: &str| format!("{kv:<38}# {comment}\n");
    let mut s = String::from(
        "# Inventory for bootstrap (written by `bootstrap init`). Check it, then:\n\
         #   bootstrap plan THIS_FILE    # what would change, without changing anything\n\
         #   bootstrap up THIS_FILE      # converge the cluster\n\n[cluster]\n",
    );
    s += &line(
        format!("name = {}", quote(&spec.name)),
        "a DNS label; names the kubeconfig context",
    );
    s += &line(
        format!("k3s_version = {}", quote(DEFAULT_K3S_VERSION)),
        "pinned, so a re-run never upgrades by surprise",
    );
    s += &line(
        "# api_endpoint = \"k8s.example.com\"".into(),
        "a DNS name or VIP reaching every server",
    );
    s += &line(
        "# tls_san = []".into(),
        "extra names for the API certificate",
    );
    s += "\n[ssh]\n";
    s += &line(
        format!("user = {}", quote(&spec.user)),
        "root, or a user with passwordless sudo",
    );
    s += &line(
        "# identity_file = \"~/.ssh/id_ed25519\"".into(),
        "omit to use ssh-agent",
    );
    s += &line(
        format!("known_hosts = {}", quote(&spec.known_hosts)),
        "host keys are checked against this file",
    );
    s += &line(
        "host_key_policy = \"strict\"".into(),
        "\"accept-new\" trusts unknown hosts on first contact",
    );
    s += "\n# The hosts' own settings (remove the table to leave the hosts as they are).\n[os]\n";
    s += "# Recommended for the platform: Loki, Promtail and Prometheus watch many files,\n# search engines need more memory maps.\nsysctl = { ";
    s += &super::os::RECOMMENDED_SYSCTL
        .iter()
        .map(|(k, v)| format!("\"{k}\" = {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    s += " }\n";
    s += &line(
        "time_sync = true".into(),
        "keep the host's NTP client running (else install chrony)",
    );
    s += &line(
        "updates = \"security\"".into(),
        "unattended-upgrades, security only, never reboots",
    );
    s += &line(
        "swap = \"keep\"".into(),
        "k3s runs with swap on (fail-swap-on=false); \"off\" turns it off",
    );
    if spec.servers.len() == 1 {
        s += "\n# One server: the cluster's state (etcd) lives on that host alone. If it is lost, only a\n\
              # snapshot brings the cluster back (`bootstrap node replace THIS_FILE server-1 --host NEW\n\
              # --from-snapshot latest`), and what changed since the snapshot is lost. Keep snapshots\n\
              # off-site ([etcd.s3]) and `bootstrap secrets export`. Three servers keep working through\n\
              # the loss of one: `bootstrap node add THIS_FILE server-2 --host ... --role server`.\n";
    }
    let nodes = spec
        .servers
        .iter()
        .enumerate()
        .map(|(i, h)| (format!("server-{}", i + 1), h, "server"))
        .chain(
            spec.agents
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("agent-{}", i + 1), h, "agent")),
        );
    for (name, host, role) in nodes {
        s.push_str(&format!(
            "\n[[node]]\nname = {}\nhost = {}\nrole = \"{role}\"\n",
            quote(&name),
            quote(host)
        ));
        if role == "agent" {
            s.push_str("# labels = { \"node.role\" = \"database\" }\n");
        } else {
            s.push_str("# taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use crate::k3s::Role;

    #[test]
    fn the_template_is_a_valid_inventory_with_the_hosts() {
        let spec = InitSpec {
            name: "demo".into(),
            servers: vec![
                "10.0.0.1".into(),
                "k3s-2.example.com".into(),
                "10.0.0.3".into(),
            ],
            agents: vec!["10.0.0.4".into()],
            user: "deploy".into(),
            known_hosts: "~/.ssh/known_hosts".into(),
        };
        let text = template(&spec);
        let inv = Inventory::from_str_at(&text, std::path::Path::new("/tmp/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(inv.cluster.name, "demo");
        assert_eq!(inv.servers().count(), 3);
        assert_eq!(inv.node("server-2").unwrap().host, "k3s-2.example.com");
        assert_eq!(inv.node("agent-1").unwrap().role, Role::Agent);
        assert_eq!(inv.ssh.user, "deploy");
        assert!(text.contains("# api_endpoint"), "{text}");
        let os = inv.os.as_ref().expect("[os]");
        assert_eq!(os.sysctl["vm.max_map_count"], "262144");
        assert!(os.time_sync);
        assert_eq!(os.updates, crate::inventory::Updates::Security);
        assert!(!text.contains("One server"), "{text}");
        // One server: what that means, and how to move to three, said in the file.
        let one = InitSpec {
            servers: vec!["10.0.0.1".into()],
            ..spec
        };
        let text = template(&one);
        Inventory::from_str_at(&text, std::path::Path::new("/tmp/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            text.contains("only a")
                && text.contains("--from-snapshot latest")
                && text.contains("--role server"),
            "{text}"
        );
    }
}
