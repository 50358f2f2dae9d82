use super::*;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory")
}

fn example(name: &str) -> Inventory {
    let path = examples_dir().join(name);
    match Inventory::load(&path) {
        Ok(inv) => inv,
        Err(e) => panic!("{} does not load:\n{e}", path.display()),
    }
}

const NODES: &str = r#"
[[node]]
name = "master-1"
host = "10.0.0.1"
role = "server"
"#;

fn parse(text: &str) -> Result<Inventory, InventoryError> {
    Inventory::from_str_at(text, Path::new("/tmp/inv/inventory.toml"))
}

fn minimal(extra: &str) -> String {
    format!("[cluster]\nname = \"c\"\n{extra}\n{NODES}")
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

#[test]
fn every_example_loads_and_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("inventory/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let inv = Inventory::load(&path)
                .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()));
            assert!(
                inv.warnings().is_empty(),
                "{}: unexpected warnings: {:?}",
                path.display(),
                inv.warnings()
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected seed, ha and lab examples");
}

#[test]
fn seed_example_matches_the_seed() {
    let inv = example("seed.toml");
    assert_eq!(inv.cluster.name, "dirtbikechina");
    assert_eq!(inv.cluster.flannel_backend, FlannelBackend::WireguardNative);
    assert_eq!(inv.cluster.datastore, Datastore::Etcd);
    let names: Vec<_> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["master-1", "worker-1", "worker-2"]);
    assert_eq!(inv.first_server().name, "master-1");
    assert_eq!(inv.agents().count(), 2);
    let master = inv.node("master-1").expect("master-1");
    assert_eq!(
        master.taints[0].to_string(),
        "node-role.kubernetes.io/control-plane=true:NoSchedule"
    );
    assert!(!master.schedulable());
    for w in ["worker-1", "worker-2"] {
        let n = inv.node(w).expect("worker");
        assert_eq!(
            n.labels.get("node.role").map(String::as_str),
            Some("database")
        );
        assert_eq!(n.node_label_args(), ["node.role=database"]);
    }
    let lh = inv.addons.longhorn.as_ref().expect("longhorn");
    let classes: Vec<_> = lh
        .storage_classes
        .iter()
        .map(|c| (c.name.as_str(), c.reclaim_policy, c.replicas))
        .collect();
    assert_eq!(
        classes,
        [
            ("longhorn-retain", ReclaimPolicy::Retain, 2),
            ("longhorn-fast", ReclaimPolicy::Delete, 2),
            ("longhorn-backup", ReclaimPolicy::Retain, 1),
        ]
    );
    assert!(!lh.chart_class_is_default());
    let tr = inv.addons.traefik.as_ref().expect("traefik");
    assert_eq!(tr.namespace, "ingress-system");
    let weights: Vec<_> = tr.routes[0].services.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [70, 30]);
    assert_eq!(tr.routes[0].services[1].namespace, "stage");
    assert!(tr.needs_cross_namespace());
    assert_eq!(tr.routes[0].tls_issuer, Some(AcmeIssuer::Production));
    // The plan's placement, sticky A/B, backups and SSD class.
    assert_eq!(
        tr.node_selector
            .get("node-role.kubernetes.io/control-plane")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        tr.tolerations[0].to_string(),
        "node-role.kubernetes.io/control-plane:NoSchedule"
    );
    assert!(tr
        .routes
        .iter()
        .all(|r| r.sticky_cookie.as_deref() == Some("dbc_variant")));
    let jobs: Vec<_> = lh
        .recurring_jobs
        .iter()
        .map(|j| (j.name.as_str(), j.task.as_str(), j.cron.as_str(), j.retain))
        .collect();
    assert_eq!(
        jobs,
        [
            ("snapshot-6h", "snapshot", "0 */6 * * *", 28),
            ("backup-daily", "backup", "0 3 * * *", 30)
        ]
    );
    assert_eq!(
        lh.storage_classes[1]
            .parameters
            .get("diskSelector")
            .map(String::as_str),
        Some("ssd")
    );
    assert!(!lh.storage_classes[0]
        .parameters
        .contains_key("diskSelector"));
    assert!(lh.backup_target.is_some() && lh.backup_target_credential_secret.is_some());
    assert!(!lh.uninstall);
    let cm = inv.addons.cert_manager.as_ref().expect("cert-manager");
    assert_eq!(cm.issuers(), [AcmeIssuer::Staging, AcmeIssuer::Production]);
    assert!(inv.addons.sealed_secrets.is_some());
    assert_eq!(inv.manifests.len(), 1);
    assert_eq!(inv.manifests[0].name, "namespaces");
    assert!(inv.manifests[0].path.is_file());
    assert_eq!(
        inv.disabled_components(),
        ["local-storage".to_string(), "traefik".to_string()]
    );
    assert_eq!(
        inv.cluster.server_config.get("flannel-external-ip"),
        Some(&toml::Value::Boolean(true))
    );
    assert_eq!(
        inv.variables.get("prod_memory").map(String::as_str),
        Some("32Gi")
    );
}

#[test]
fn ha_example_has_three_servers_and_an_endpoint() {
    let inv = example("ha.toml");
    assert_eq!(inv.servers().count(), 3);
    assert_eq!(inv.agents().count(), 2);
    assert_eq!(inv.cluster.api_endpoint.as_deref(), Some("k8s.example.com"));
    // The endpoint, the server's own host, then the extra names.
    let m2 = inv.node("server-2").unwrap();
    assert_eq!(
        inv.tls_sans(m2),
        ["k8s.example.com", "10.0.0.12", "10.0.0.10"]
    );
    assert_eq!(inv.install.source, InstallSource::Upload);
    assert_eq!(inv.install.cache_dir, inv.state_dir().join("cache"));
    let bastion = inv.ssh.bastion.clone().expect("bastion");
    assert_eq!(bastion.user.as_deref(), Some("jump"));
    assert_eq!(inv.ssh.command_timeout, Duration::from_secs(600));
    let agent = inv.node("agent-1").expect("agent-1");
    assert_eq!(
        agent
            .api_labels
            .get("node-role.kubernetes.io/worker")
            .map(String::as_str),
        Some("true")
    );
    assert!(!agent.labels.contains_key("node-role.kubernetes.io/worker"));
    assert_eq!(agent.all_labels().len(), 2);
}

#[test]
fn lab_example_matches_the_lab() {
    let inv = example("lab.toml");
    assert_eq!(inv.ssh.user, "root");
    assert_eq!(inv.install.mirror, "http://10.213.1.1:8080");
    assert_eq!(
        inv.ssh.identity_file,
        Some(examples_dir().join("id_ed25519"))
    );
    assert_eq!(inv.ssh.known_hosts, examples_dir().join("known_hosts"));
    assert_eq!(inv.ssh.connect_timeout, Duration::from_secs(5));
    let hosts: Vec<_> = inv.nodes.iter().map(|n| n.host.as_str()).collect();
    assert_eq!(hosts, ["10.213.1.11", "10.213.1.12", "10.213.1.13"]);
    let t = inv.ssh_overrides(inv.node("worker-2").expect("worker-2"));
    assert_eq!((t.user.as_deref(), t.port), (Some("root"), None));
    assert_eq!(t.host_key_policy, Some(HostKeyPolicy::Strict));
    assert_eq!(inv.first_server().host, "10.213.1.11");
    assert_eq!(inv.base_dir(), examples_dir());
    assert_eq!(inv.state_dir(), examples_dir().join(".bootstrap"));
}

#[test]
fn defaults() {
    let inv = parse(&minimal("")).expect("minimal inventory");
    assert_eq!(inv.cluster.k3s_version.to_string(), DEFAULT_K3S_VERSION);
    assert_eq!(inv.cluster.k3s_version.url_encoded(), "v1.36.3%2Bk3s1");
    assert_eq!(inv.cluster.flannel_backend, FlannelBackend::Vxlan);
    assert_eq!(inv.cluster.cluster_cidr, DEFAULT_CLUSTER_CIDR);
    assert_eq!(inv.cluster.service_cidr, DEFAULT_SERVICE_CIDR);
    assert_eq!(inv.cluster.cluster_domain, "cluster.local");
    assert_eq!(inv.cluster.datastore, Datastore::Etcd);
    assert_eq!(inv.install.source, InstallSource::Download);
    assert_eq!(inv.install.mirror, DEFAULT_MIRROR);
    assert_eq!(
        inv.install.cache_dir,
        Path::new("/tmp/inv/.bootstrap/cache")
    );
    assert_eq!(inv.ssh.user, "root");
    assert_eq!(inv.ssh.port, 22);
    assert_eq!(inv.ssh.host_key_policy, HostKeyPolicy::Strict);
    assert_eq!(inv.ssh.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert!(inv.disabled_components().is_empty());
    // Only the server's host.
    let first = inv.first_server();
    assert_eq!(inv.tls_sans(first), std::slice::from_ref(&first.host));

    let inv = parse(&minimal(
        "[addons.longhorn]\n[addons.traefik]\n[addons.sealed_secrets]\n[addons.cert_manager]\nacme_email = \"a@b.io\"",
    ))
    .expect("add-ons with defaults");
    let lh = inv.addons.longhorn.expect("longhorn");
    assert_eq!(lh.version, LONGHORN_CHART_VERSION);
    assert_eq!(lh.replicas, 1, "one schedulable node → one replica");
    assert_eq!(lh.data_path, DEFAULT_LONGHORN_DATA_PATH);
    let tr = inv.addons.traefik.expect("traefik");
    assert_eq!(
        (
            tr.version.as_str(),
            tr.namespace.as_str(),
            tr.redirect_https
        ),
        (TRAEFIK_CHART_VERSION, "ingress-system", true)
    );
    let cm = inv.addons.cert_manager.expect("cert-manager");
    assert_eq!(cm.version, CERT_MANAGER_CHART_VERSION);
    assert_eq!(cm.ingress_class, "traefik");
    assert!(cm.staging && cm.production);
    assert_eq!(
        inv.addons.sealed_secrets.expect("sealed").version,
        SEALED_SECRETS_CHART_VERSION
    );
}

#[test]
fn longhorn_default_replicas_follow_schedulable_nodes() {
    let mut text = "[cluster]\nname = \"c\"\n[addons.longhorn]\n".to_string();
    for i in 1..=5 {
        text.push_str(&format!(
            "[[node]]\nname = \"n{i}\"\nhost = \"10.0.0.{i}\"\nrole = \"{}\"\n",
            if i == 1 { "server" } else { "agent" }
        ));
    }
    let inv = parse(&text).expect("5 nodes");
    assert_eq!(inv.addons.longhorn.expect("longhorn").replicas, 3);
}

#[test]
fn per_node_ssh_overrides() {
    let text = r#"
[cluster]
name = "c"
[ssh]
user = "deploy"
port = 2222
identity_file = "/keys/default"
[[node]]
name = "a"
host = "10.0.0.1"
role = "server"
user = "admin"
port = 22
identity_file = "keys/a"
bastion = "10.0.0.254"
"#;
    let inv = parse(text).expect("overrides");
    let t = inv.ssh_overrides(&inv.nodes[0]);
    assert_eq!(t.user.as_deref(), Some("admin"));
    assert_eq!(t.port, Some(22));
    assert_eq!(t.identity_file, Some(PathBuf::from("/tmp/inv/keys/a")));
    assert_eq!(
        t.bastion,
        Some(Bastion {
            user: None,
            host: "10.0.0.254".into(),
            port: 22
        })
    );
}

#[test]
fn ssh_overrides_leave_unset_values_to_ssh_config() {
    let inv = parse(&minimal("")).expect("minimal");
    let o = inv.ssh_overrides(&inv.nodes[0]);
    assert_eq!(
        (o.user, o.port, o.known_hosts, o.host_key_policy),
        (None, None, None, None)
    );

    let inv = example("lab.toml");
    let o = inv.ssh_overrides(&inv.nodes[0]);
    assert_eq!(o.user.as_deref(), Some("root"));
    assert_eq!(o.port, None);
    assert_eq!(o.known_hosts, Some(examples_dir().join("known_hosts")));
    assert_eq!(o.host_key_policy, Some(HostKeyPolicy::Strict));
}

#[test]
fn even_server_count_is_a_warning_not_an_error() {
    let mut text = "[cluster]\nname = \"c\"\napi_endpoint = \"k8s.example.com\"\n".to_string();
    for i in 1..=2 {
        text.push_str(&format!(
            "[[node]]\nname = \"s{i}\"\nhost = \"10.0.0.{i}\"\nrole = \"server\"\n"
        ));
    }
    let inv = parse(&text).expect("two servers load");
    assert_eq!(inv.warnings().len(), 1);
    let w = inv.warnings()[0].to_string();
    assert!(w.contains("inventory.toml:11:8: warning:"), "{w}");
    assert!(w.contains("even count"), "{w}");
}

#[test]
fn several_servers_without_endpoint_warns() {
    let mut text = "[cluster]\nname = \"c\"\n".to_string();
    for i in 1..=3 {
        text.push_str(&format!(
            "[[node]]\nname = \"s{i}\"\nhost = \"10.0.0.{i}\"\nrole = \"server\"\n"
        ));
    }
    let inv = parse(&text).expect("three servers load");
    assert_eq!(inv.warnings().len(), 1);
    assert!(inv.warnings()[0].message.contains("api_endpoint"));
}

#[test]
fn sqlite_allows_one_server_only() {
    let mut text =
        "[cluster]\nname = \"c\"\ndatastore = \"sqlite\"\napi_endpoint = \"k.example.com\"\n"
            .to_string();
    for i in 1..=3 {
        text.push_str(&format!(
            "[[node]]\nname = \"s{i}\"\nhost = \"10.0.0.{i}\"\nrole = \"server\"\n"
        ));
    }
    let d = errors(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, ErrorKind::Conflict);
}

#[test]
fn restricted_labels_go_to_api_labels_only() {
    let text = format!(
        "{}labels = {{ \"node-role.kubernetes.io/worker\" = \"true\" }}\n",
        minimal("")
    );
    let d = errors(&text);
    assert_eq!(d[0].kind, ErrorKind::RestrictedLabel);
    assert!(d[0].message.contains("api_labels"));

    let text = format!(
        "{}api_labels = {{ \"node-role.kubernetes.io/worker\" = \"true\" }}\n",
        minimal("")
    );
    let inv = parse(&text).expect("api_labels accept it");
    assert!(inv.nodes[0].labels.is_empty());
    assert!(inv.nodes[0].node_label_args().is_empty());

    // k3s owns the control-plane role label, in either table.
    let text = format!(
        "{}api_labels = {{ \"node-role.kubernetes.io/control-plane\" = \"true\" }}\n",
        minimal("")
    );
    assert_eq!(errors(&text)[0].kind, ErrorKind::RestrictedLabel);

    // Kubelet-allowed kubernetes.io labels are fine in labels.
    let text = format!(
        "{}labels = {{ \"topology.kubernetes.io/zone\" = \"a\", \"node.kubernetes.io/pool\" = \"x\" }}\n",
        minimal("")
    );
    parse(&text).expect("kubelet-allowed labels");
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = r#"[cluster]
name = "Bad_Name"
k3s_version = "1.36.3"

[[node]]
name = "a"
host = "10.0.0.1"
role = "server"
taints = ["foo"]

[[node]]
name = "a"
host = "10.0.0.1"
role = "agent"
"#;
    let e = parse(text).expect_err("several errors");
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{e}");
    assert!(lines[0].starts_with("/tmp/inv/inventory.toml:2:8: error: cluster name"));
    assert!(lines[1].starts_with("/tmp/inv/inventory.toml:3:15: error: k3s_version"));
    assert!(lines[2].starts_with("/tmp/inv/inventory.toml:9:11: error: node \"a\": taint \"foo\""));
    assert!(lines[3]
        .starts_with("/tmp/inv/inventory.toml:12:8: error: node name \"a\" is already used"));
    assert!(lines[4].starts_with("/tmp/inv/inventory.toml:13:8: error: node \"a\": host"));
}

#[test]
fn config_keys_are_checked_per_role() {
    let ok = minimal(
        "[cluster.server_config]\nkube-apiserver-arg = [\"audit-log-maxage=30\"]\nsecrets-encryption = true\n[cluster.agent_config]\nkubelet-arg = [\"max-pods=150\"]",
    );
    let inv = parse(&ok).expect("valid flags");
    assert_eq!(inv.cluster.agent_config.len(), 1);

    let kinds = |extra: &str| -> Vec<ErrorKind> {
        errors(&minimal(extra)).iter().map(|d| d.kind).collect()
    };
    assert_eq!(
        kinds("[cluster.agent_config]\ndisable = [\"x\"]"),
        [ErrorKind::WrongRoleFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\ntoken = \"x\""),
        [ErrorKind::ManagedFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\nnode-label = [\"a=b\"]"),
        [ErrorKind::ManagedFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\nt = \"x\""),
        [ErrorKind::UnknownFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\nkubelet_arg = [\"a\"]"),
        [ErrorKind::UnknownFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\nfoo = 1.5"),
        [ErrorKind::UnknownFlag]
    );
    assert_eq!(
        kinds("[cluster.server_config]\nkubelet-arg = 1.5"),
        [ErrorKind::InvalidFlagValue]
    );

    // Critical server values cannot differ per server.
    let text = format!(
        "{}config = {{ egress-selector-mode = \"pod\" }}\n",
        minimal("")
    );
    assert_eq!(errors(&text)[0].kind, ErrorKind::ManagedFlag);
    let text = format!("{}config = {{ node-ip = \"10.0.0.1\" }}\n", minimal(""));
    parse(&text).expect("per-node node-ip");
}

#[test]
fn resolve_path_expands_home_and_base() {
    let base = Path::new("/srv/inv");
    assert_eq!(
        resolve_path("keys/a", base).unwrap(),
        PathBuf::from("/srv/inv/keys/a")
    );
    assert_eq!(resolve_path("/abs", base).unwrap(), PathBuf::from("/abs"));
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .expect("HOME is set: `~` expands to it");
    assert_eq!(
        resolve_path("~/.ssh/id", base).unwrap(),
        PathBuf::from(home).join(".ssh/id")
    );
    assert!(resolve_path("~bob/x", base).is_err());
    assert!(resolve_path("", base).is_err());
}

#[test]
fn missing_file_and_non_utf8_are_errors() {
    let e = Inventory::load("/nonexistent/inventory.toml").expect_err("missing");
    assert!(matches!(e, InventoryError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/inventory.toml: error: cannot read"));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, b"[cluster]\nname = \"\xff\"\n").expect("write");
    let e = Inventory::load(&path).expect_err("not utf-8");
    assert_eq!(e.diagnostics()[0].kind, ErrorKind::NotUtf8);
    assert_eq!((e.diagnostics()[0].line, e.diagnostics()[0].column), (2, 9));
}

/// Cheap deterministic generator; no dependency needed for mutation testing.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn no_panic_on_truncated_or_mutated_examples() {
    const NOISE: &[&[u8]] = &[
        b"\"",
        b"'",
        b"[",
        b"]",
        b"[[",
        b"{",
        b"}",
        b"=",
        b",",
        b"\n",
        b"#",
        b".",
        b"-",
        b":",
        b"0",
        b"-1",
        b"99999999999999999999",
        b"a",
        b"\xc3\xa9",
        b"\\u",
        b"\"\"\"",
        b" ",
        b"~",
        b"/",
        b"@",
        b"NoSchedule",
        b"server",
        b"true",
        b"1979-05-27",
    ];
    let mut rng = Lcg(0x5eed);
    let mut runs = 0;
    for name in ["seed.toml", "ha.toml", "lab.toml"] {
        let path = examples_dir().join(name);
        let original = std::fs::read(&path).expect("example");
        let mut check = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            if let Err(e) = Inventory::from_str_at(&text, &path) {
                for d in e.diagnostics() {
                    assert!(d.line >= 1 && d.column >= 1, "{d}");
                    assert!(!d.message.is_empty());
                }
                let _ = e.to_string();
            }
            runs += 1;
        };
        // Every truncation point (stepped to keep the test quick on long files).
        for cut in (0..original.len()).step_by(3) {
            check(&original[..cut]);
        }
        for _ in 0..600 {
            let mut bytes = original.clone();
            for _ in 0..(1 + rng.next() % 4) {
                let at = rng.next() % (bytes.len() + 1);
                match rng.next() % 4 {
                    0 => {
                        let n = NOISE[rng.next() % NOISE.len()];
                        bytes.splice(at..at, n.iter().copied());
                    }
                    1 => {
                        let end = (at + 1 + rng.next() % 12).min(bytes.len());
                        bytes.drain(at.min(end)..end);
                    }
                    2 => {
                        let n = NOISE[rng.next() % NOISE.len()];
                        let end = (at + n.len()).min(bytes.len());
                        bytes.splice(at.min(end)..end, n.iter().copied());
                    }
                    _ => {
                        // Duplicate a line: repeated keys and tables.
                        let start = bytes[..at]
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1);
                        let end = bytes[at..]
                            .iter()
                            .position(|b| *b == b'\n')
                            .map_or(bytes.len(), |i| at + i + 1);
                        let line = bytes[start..end].to_vec();
                        bytes.splice(end..end, line);
                    }
                }
            }
            check(&bytes);
        }
    }
    assert!(runs > 2000);
}

#[test]
fn storage_class_parameter_names_cannot_inject_yaml() {
    // A key with a newline would have rendered a whole extra object into the manifest.
    let text = minimal(
        "[addons.longhorn]\nstorage_classes = [{ name = \"s\", parameters = { \"x: y\\n---\\nkind: Namespace\" = \"1\" } }]",
    );
    let d = errors(&text);
    assert!(
        d.iter()
            .any(|d| d.kind == ErrorKind::InvalidName && d.message.contains("parameter name")),
        "{d:?}"
    );
    let ok = minimal(
        "[addons.longhorn]\nstorage_classes = [{ name = \"s\", parameters = { staleReplicaTimeout = \"30\", \"csi.storage.k8s.io/fstype\" = \"xfs\" } }]",
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn a_plain_http_mirror_needs_allow_http_and_pins_are_sha256() {
    let http = "[install]\nmirror = \"http://10.0.0.1:8080\"";
    let d = errors(&minimal(http));
    assert!(
        d.iter()
            .any(|d| d.kind == ErrorKind::InvalidUrl && d.message.contains("allow_http = true")),
        "{d:?}"
    );
    assert!(parse(&minimal(&format!("{http}\nallow_http = true"))).is_ok());
    let pin = "a".repeat(64);
    let inv = parse(&minimal(&format!(
        "[install]\n[install.sha256]\nk3s = \"{pin}\""
    )))
    .unwrap();
    assert_eq!(inv.install.sha256["k3s"], pin);
    let d = errors(&minimal("[install]\n[install.sha256]\nk3s = \"abc\""));
    assert!(
        d.iter().any(|d| d.message.contains("64 hex digits")),
        "{d:?}"
    );
}

#[test]
fn addon_placement_schedules_and_confirmations_are_checked() {
    let e = errors(&minimal(
        "[addons.traefik]\nnode_selector = { \"bad key!\" = \"x\" }\ntolerations = [\"nokey\"]\n\n[[addons.traefik.routes]]\nname = \"r\"\nnamespace = \"prod\"\nhost = \"a.example.com\"\nsticky_cookie = \"bad cookie\"\nservices = [{ name = \"s\", port = 80 }]\n\n[addons.longhorn]\nstorage_classes = [{ name = \"fast\", disk_selector = [\"s sd\"] }]\n\n[[addons.longhorn.recurring_jobs]]\nname = \"b\"\ntask = \"backup\"\ncron = \"daily\"\nretain = 0\n",
    ));
    let text: Vec<String> = e.iter().map(|d| d.message.clone()).collect();
    let all = text.join("\n");
    for want in [
        "node_selector key \"bad key!\"",
        "toleration \"nokey\"",
        "sticky_cookie \"bad cookie\"",
        "disk tag \"s sd\"",
        "a backup job needs backup_target",
        "cron \"daily\"",
        "retain is 0",
    ] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
    let e = errors(&minimal(
        "[[addons.longhorn.recurring_jobs]]\nname = \"s\"\ntask = \"snap\"\ncron = \"0 * * * *\"\nretain = 3\n",
    ));
    assert!(
        e[0].message
            .contains("task \"snap\" is not one Longhorn knows"),
        "{e:?}"
    );
    let inv = parse(&minimal("[addons.longhorn]\nuninstall = true\n")).unwrap();
    assert!(inv.addons.longhorn.as_ref().unwrap().uninstall);
    let spec = crate::addons::AddonsSpec::from_inventory(&inv).unwrap();
    assert!(spec.longhorn.is_none() && spec.longhorn_uninstall);
}

#[test]
fn an_api_endpoint_only_one_machine_reaches_is_refused() {
    for ep in [
        "127.0.0.1",
        "127.0.1.1",
        "localhost",
        "::1",
        "169.254.10.1",
        "fe80::1",
        "0.0.0.0",
    ] {
        let e = errors(&minimal(&format!("api_endpoint = \"{ep}\"")));
        assert!(
            e.iter().any(
                |d| d.message.contains(&format!("api_endpoint \"{ep}\" is a"))
                    || d.message.contains(&format!("api_endpoint \"{ep}\" is the"))
            ),
            "{ep}: {e:?}"
        );
    }
    for ep in ["10.0.0.5", "k8s.example.com", "2001:db8::5"] {
        assert!(
            parse(&minimal(&format!("api_endpoint = \"{ep}\""))).is_ok(),
            "{ep}"
        );
    }
}

#[test]
fn etcd_table_renders_k3s_flags_and_keeps_credentials_out_of_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let inv_path = dir.path().join("inventory.toml");
    write_private(
        &dir.path().join("s3.toml"),
        "access_key = \"AKIA1\"\nsecret_key = \"s3cr3t\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = minimal(
        "[etcd]\nsnapshot_schedule = \"0 */6 * * *\"\nsnapshot_retention = 10\nsnapshot_compress = true\n\
         [etcd.s3]\nendpoint = \"minio.example.com:9000\"\nbucket = \"k3s-backups\"\nfolder = \"prod\"\n\
         endpoint_ca = \"ca.pem\"\ncredentials_file = \"s3.toml\"\nproxy = \"http://proxy.example.com:3128\"\n\
         timeout = \"10m\"\nbucket_lookup_type = \"path\"\nretention = 0\n",
    );
    let inv = Inventory::from_str_at(&text, &inv_path).unwrap();
    let e = inv.etcd.as_ref().unwrap();
    let keys: BTreeMap<&str, EtcdKey> = e.server_keys().into_iter().collect();
    let s = |k: &str| match keys.get(k) {
        Some(EtcdKey::Str(v)) => v.clone(),
        Some(EtcdKey::Bool) => "true".into(),
        None => panic!("{k} missing from {keys:?}"),
    };
    assert_eq!(s("etcd-snapshot-schedule-cron"), "0 */6 * * *");
    assert_eq!(s("etcd-snapshot-retention"), "10");
    assert_eq!(s("etcd-snapshot-compress"), "true");
    assert_eq!(s("etcd-s3"), "true");
    assert_eq!(s("etcd-s3-bucket"), "k3s-backups");
    assert_eq!(s("etcd-s3-endpoint"), "minio.example.com:9000");
    assert_eq!(s("etcd-s3-folder"), "prod");
    assert_eq!(s("etcd-s3-access-key"), "AKIA1");
    assert_eq!(s("etcd-s3-secret-key"), "s3cr3t");
    assert_eq!(s("etcd-s3-proxy"), "http://proxy.example.com:3128");
    assert_eq!(s("etcd-s3-timeout"), "600s");
    assert_eq!(s("etcd-s3-bucket-lookup-type"), "path");
    // 0 keeps every snapshot, as k3s reads it.
    assert_eq!(s("etcd-s3-retention"), "0");
    assert!(!keys.contains_key("etcd-s3-session-token"));
    // k3s's client timeout for a save, plus the S3 upload's.
    assert_eq!(e.snapshot_timeout_secs(), 120 + 600);
    // base64 of the PEM: k3s reads that as well as a path (pkg/etcd/s3/s3.go:563-585).
    assert!(s("etcd-s3-endpoint-ca").starts_with("LS0tLS1CRUdJTi"));
    // Every key is a real k3s server flag.
    for k in keys.keys() {
        assert_eq!(flags::lookup(Role::Server, k), flags::Lookup::Flag, "{k}");
    }
    // Debug output never shows the secret.
    assert!(!format!("{inv:?}").contains("s3cr3t"));
}

#[test]
fn etcd_table_errors() {
    let msgs = |extra: &str| -> Vec<String> {
        errors(&minimal(extra))
            .into_iter()
            .map(|d| d.message)
            .collect()
    };
    let m = msgs("[etcd]\nsnapshot_schedule = \"every day\"\nsnapshot_dir = \"backups\"\nsnapshot_retention = 1001\n");
    assert!(
        m.iter().any(|x| x.contains("is not a cron schedule")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x.contains("must be an absolute path")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x.contains("snapshot_retention is 1001")),
        "{m:?}"
    );
    let m = msgs("[etcd]\nsnapshot_schedul = \"0 * * * *\"\n");
    assert!(m.iter().any(|x| x.contains("snapshot_schedul")), "{m:?}");
    let m = msgs("[etcd.s3]\nbucket = \"B\"\ncredentials_file = \"/nonexistent/creds.toml\"\n");
    assert!(
        m.iter().any(|x| x.contains("not a valid bucket name")),
        "{m:?}"
    );
    assert!(m.iter().any(|x| x.contains("credentials_file")), "{m:?}");
    let m = msgs("datastore = \"sqlite\"\n[etcd]\nsnapshot_schedule = \"0 * * * *\"\n");
    assert!(
        m.iter()
            .any(|x| x.contains("[etcd] needs datastore = \"etcd\"")),
        "{m:?}"
    );
    let m = msgs(
        "[cluster.server_config]\netcd-snapshot-retention = 3\n[etcd]\nsnapshot_retention = 4\n",
    );
    assert!(
        m.iter()
            .any(|x| x.contains("is what [etcd] renders (as snapshot_retention)")),
        "{m:?}"
    );
    // Without [etcd] the flag still works, with a warning.
    let inv = parse(&minimal(
        "[cluster.server_config]\netcd-s3-bucket = \"b\"\n",
    ))
    .unwrap();
    let w: Vec<String> = inv.warnings().iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|x| x.contains("belongs in [etcd] as [etcd.s3] bucket")),
        "{w:?}"
    );
}

const CHART: &str = r#"
[[charts]]
name = "cnpg"
repo = "https://cloudnative-pg.github.io/charts"
chart = "cloudnative-pg"
version = "0.29.0"
namespace = "cnpg-system"
"#;

#[test]
fn a_chart_entry_is_read_with_its_defaults() {
    let text = minimal(&format!(
        "{CHART}values = {{ crds = {{ create = true }} }}\ntimeout = \"10m\"\nwait_for = [\"cnpg-system/Deployment/cnpg-cloudnative-pg\", \"CustomResourceDefinition.apiextensions.k8s.io/clusters.postgresql.cnpg.io\"]\n\n[[charts]]\nname = \"flagger\"\nrepo = \"oci://ghcr.io/fluxcd/charts\"\nchart = \"flagger\"\nversion = \"1.44.0\"\nnamespace = \"flagger-system\"\nafter = [\"cnpg\"]\nfailure_policy = \"abort\"\nnode_selector = {{ \"node-role\" = \"infra\" }}\ntolerations = [\"dedicated=infra:NoSchedule\"]\n"
    ));
    let inv = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let c = &inv.charts[0];
    assert_eq!(
        c.repo,
        ChartRepo::Https("https://cloudnative-pg.github.io/charts".into())
    );
    assert_eq!(c.failure_policy, "reinstall");
    assert_eq!(c.timeout, Some(Duration::from_secs(600)));
    assert_eq!(c.values, serde_json::json!({"crds": {"create": true}}));
    assert_eq!(
        c.wait_for[0].to_string(),
        "cnpg-system/Deployment/cnpg-cloudnative-pg"
    );
    assert_eq!(c.wait_for[1].group, "apiextensions.k8s.io");
    assert_eq!(c.wait_for[1].namespace, "");
    let f = &inv.charts[1];
    assert_eq!(f.repo, ChartRepo::Oci("oci://ghcr.io/fluxcd/charts".into()));
    assert_eq!(f.after, vec!["cnpg".to_string()]);
    assert_eq!(f.failure_policy, "abort");
    assert_eq!(
        f.node_selector.get("node-role").map(String::as_str),
        Some("infra")
    );
    assert_eq!(f.tolerations.len(), 1);
}

#[test]
fn chart_entries_are_checked_strictly() {
    let bad = |extra: &str| -> Vec<String> {
        errors(&minimal(extra))
            .into_iter()
            .map(|d| d.message)
            .collect()
    };
    let base = "[[charts]]\nname = \"x\"\nrepo = \"https://charts.example.com\"\nchart = \"x\"\nnamespace = \"x\"\n";
    let e = bad(base);
    assert!(
        e.iter().any(|m| m.contains("`version` is missing; pin")),
        "{e:?}"
    );
    let e = bad(&format!("{base}version = \"^1.2.0\"\n"));
    assert!(
        e.iter()
            .any(|m| m.contains("not a pinned version: a range")),
        "{e:?}"
    );
    let e = bad(&format!("{base}version = \"1.2.0\"\nvalue = {{}}\n"));
    assert!(
        e.iter().any(|m| m.contains("unknown field `value`")),
        "{e:?}"
    );
    for name in ["traefik", "longhorn", "traefik-crd"] {
        let e = bad(&base
            .replace("name = \"x\"", &format!("name = \"{name}\""))
            .replace("namespace", "version = \"1.0.0\"\nnamespace"));
        assert!(
            e.iter()
                .any(|m| m.contains("used by k3s or a bootstrap add-on")),
            "{name}: {e:?}"
        );
    }
    let e = bad(&format!(
        "{base}version = \"1.0.0\"\n{base}version = \"1.0.1\"\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("used by another [[charts]] entry")),
        "{e:?}"
    );
    let e = bad(&format!(
        "{}version = \"1.0.0\"\n",
        base.replace("https://charts", "http://charts")
    ));
    assert!(e.iter().any(|m| m.contains("plain http")), "{e:?}");
    let e = bad(&format!("{base}version = \"1.0.0\"\nfailure_policy = \"ignore\"\nwait_for = [\"x/deployment/y\"]\nafter = [\"cert-manager\", \"y\"]\n"));
    assert!(
        e.iter().any(|m| m.contains("failure_policy \"ignore\"")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("kind \"deployment\" is not a Kind")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("after \"cert-manager\"") && m.contains("not enabled")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("after \"y\" names no chart")),
        "{e:?}"
    );
    let e = bad(&format!(
        "{base}version = \"1.0.0\"\nvalues = {{ from = 2024-04-01 }}\n"
    ));
    assert!(
        e.iter().any(|m| m.contains("values.from is a TOML date")),
        "{e:?}"
    );
}

#[test]
fn a_cycle_in_after_is_an_error_naming_both_places() {
    let chart = |name: &str, after: &str| {
        format!("[[charts]]\nname = \"{name}\"\nrepo = \"https://charts.example.com\"\nchart = \"{name}\"\nversion = \"1.0.0\"\nnamespace = \"ns\"\nafter = [\"{after}\"]\n")
    };
    let text = minimal(&format!("{}{}", chart("a", "b"), chart("b", "a")));
    let d = errors(&text);
    let cyc: Vec<&Diagnostic> = d.iter().filter(|d| d.message.contains("cycle")).collect();
    assert_eq!(cyc.len(), 1, "{d:?}");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("after"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(cyc[0].line, lines[0]);
    for l in &lines {
        assert!(
            cyc[0].message.contains(&format!("line {l},")),
            "{}",
            cyc[0].message
        );
    }
    // A chart after itself is a cycle too; a manifest may follow a chart.
    let e = errors(&minimal(&chart("a", "a")));
    assert!(
        e.iter().any(|d| d.message.contains("\"a\" after \"a\"")),
        "{e:?}"
    );
}

#[test]
fn failure_policy_retry_needs_a_k3s_whose_helm_controller_knows_it() {
    let chart = "[[charts]]\nname = \"app\"\nrepo = \"https://charts.example.com\"\nchart = \"app\"\nversion = \"1.0.0\"\nnamespace = \"apps\"\nfailure_policy = \"retry\"\n";
    let with =
        |v: &str| format!("[cluster]\nname = \"c\"\nk3s_version = \"{v}\"\n{chart}\n{NODES}");
    for ok in [
        "v1.36.3+k3s1",
        "v1.36.4+k3s1",
        "v1.35.7+k3s1",
        "v1.34.10+k3s1",
        "v1.37.0+k3s1",
    ] {
        assert!(parse(&with(ok)).is_ok(), "{ok}");
    }
    for old in [
        "v1.36.2+k3s1",
        "v1.35.6+k3s1",
        "v1.34.9+k3s1",
        "v1.33.13+k3s1",
    ] {
        let e = errors(&with(old));
        assert!(
            e.iter()
                .any(|d| d.message.contains(
                    "failure_policy \"retry\" is not known to the helm-controller of k3s"
                ) && d.message.contains(old)),
            "{old}: {e:?}"
        );
        let line = with(old)
            .lines()
            .position(|l| l.starts_with("failure_policy"))
            .unwrap()
            + 1;
        assert!(e.iter().any(|d| d.line == line), "{old}: {e:?}");
    }
}

/// Issue 26 (C16): `[etcd.s3]` as k3s takes it: temporary credentials refused with both of
/// their effects, the proxy, timeout and bucket lookup keys checked as k3s checks them, and
/// `etcd-s3-*` keys of `server_config` mapped to keys that exist.
#[test]
fn etcd_s3_keys_and_temporary_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let inv_path = dir.path().join("inventory.toml");
    write_private(
        &dir.path().join("sts.toml"),
        "access_key = \"ASIA1\"\nsecret_key = \"s\"\nsession_token = \"t\"\n",
    )
    .unwrap();
    let msgs = |extra: &str| messages_at(&minimal(extra), &inv_path);
    let m = msgs("[etcd.s3]\nbucket = \"b-1\"\ncredentials_file = \"sts.toml\"\n");
    assert!(
        m.iter().any(|x| x.contains("has a session_token")
            && x.contains("drops the token")
            && x.contains("expires within hours")),
        "{m:?}"
    );
    write_private(
        &dir.path().join("s3.toml"),
        "access_key = \"AKIA1\"\nsecret_key = \"s\"\n",
    )
    .unwrap();
    let base = "[etcd.s3]\nbucket = \"b-1\"\ncredentials_file = \"s3.toml\"\n";
    for (extra, want) in [
        ("proxy = \"proxy:3128\"\n", "must be \"none\""),
        (
            "bucket_lookup_type = \"virtual\"\n",
            "bucket_lookup_type \"virtual\"",
        ),
        ("timeout = \"soon\"\n", "etcd.s3 timeout is not valid"),
    ] {
        let m = msgs(&format!("{base}{extra}"));
        assert!(m.iter().any(|x| x.contains(want)), "{extra}: {m:?}");
    }
    assert!(msgs(&format!("{base}proxy = \"none\"\n")).is_empty());
    // In server_config: the session token refused too; keys mapped only to what exists.
    let m = msgs("[cluster.server_config]\netcd-s3-session-token = \"t\"\n");
    assert!(m.iter().any(|x| x.contains("drops the token")), "{m:?}");
    let m = msgs(&format!(
        "[cluster.server_config]\netcd-s3-proxy = \"none\"\n{base}"
    ));
    assert!(
        m.iter().any(|x| x.contains("(as [etcd.s3] proxy)")),
        "{m:?}"
    );
}

/// Issue 26 (C16): cron schedules as robfig/cron v3 parses them.
#[test]
fn snapshot_schedules_are_checked_as_robfig_parses_them() {
    let ok = |spec: &str| {
        let text = minimal(&format!("[etcd]\nsnapshot_schedule = \"{spec}\"\n"));
        assert!(parse(&text).is_ok(), "{spec}: {:?}", parse(&text).err());
    };
    let bad = |spec: &str, want: &str| {
        let e = errors(&minimal(&format!(
            "[etcd]\nsnapshot_schedule = \"{spec}\"\n"
        )));
        assert!(e.iter().any(|d| d.message.contains(want)), "{spec}: {e:?}");
    };
    for s in [
        "0 3 * * TUE",
        "0 3 * * tue-fri",
        "0 0 1 jan,jul *",
        "CRON_TZ=Europe/Berlin 0 3 * * *",
        "TZ=UTC @daily",
        "*/15 * ? * *",
    ] {
        ok(s);
    }
    bad(
        "0 3 * * TUS",
        "\"TUS\" is not a number or a day-of-week name",
    );
    bad("0 3 MON * *", "names are only for month and day-of-week");
    bad("0 3 * * 5-1", "beyond its end");
    bad("0 24 * * *", "out of range 0-23");
    bad("CRON_TZ= 0 3 * * *", "time zone");
    if std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").is_file() {
        bad(
            "CRON_TZ=Mars/Base 0 3 * * *",
            "not a time zone in the tz database",
        );
    }
    bad("@every  6h", "@every needs a Go duration");
}

/// A credentials file as the README says to keep it: 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Review 3, L3: the files the inventory ships to the cluster come from its directory: no
/// absolute path, no `~`, no `..` out of it and no symlink out of it, unless the inventory says
/// allow_files_outside_inventory = true (with a warning).
#[test]
fn shipped_files_come_from_the_inventorys_directory_unless_allowed() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("repo");
    std::fs::create_dir_all(dir.join("values")).unwrap();
    let secret = outer.path().join("id_ed25519");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::write(dir.join("values/ok.yaml"), "a: 1\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("values/link.yaml")).unwrap();
    let inv_path = dir.join("inventory.toml");
    let chart = |values_file: &str| {
        format!("[[charts]]\nname = \"app\"\nrepo = \"https://charts.example.com\"\nchart = \"app\"\nversion = \"1.0.0\"\nnamespace = \"apps\"\nvalues_file = \"{values_file}\"\n")
    };
    let msgs = |extra: &str| messages_at(&minimal(extra), &inv_path);
    assert_eq!(msgs(&chart("values/ok.yaml")), Vec::<String>::new());
    assert_eq!(
        msgs(&chart("values/../values/ok.yaml")),
        Vec::<String>::new()
    );
    let secret_s = secret.display().to_string();
    for (path, why) in [
        (secret_s.as_str(), "is an absolute path"),
        ("~/.ssh/id_ed25519", "starts with '~'"),
        ("../id_ed25519", "leads out of the inventory's directory"),
        (
            "values/../../id_ed25519",
            "leads out of the inventory's directory",
        ),
        ("values/link.yaml", "is a symlink to"),
    ] {
        let m = msgs(&chart(path));
        assert!(
            m.iter()
                .any(|x| x.contains(why) && x.contains("allow_files_outside_inventory")),
            "{path}: {m:?}"
        );
    }
    let m = msgs(&format!("[[manifests]]\npath = \"{secret_s}\"\n"));
    assert!(m.iter().any(|x| x.contains("manifest path")), "{m:?}");
    let m = msgs("[addons.sealed_secrets]\nversion = \"2.19.1\"\nchart_archive = \"~/c.tgz\"\n");
    assert!(m.iter().any(|x| x.contains("chart_archive")), "{m:?}");
    let m = msgs("[etcd.s3]\nbucket = \"b-1\"\nendpoint_ca = \"../id_ed25519\"\n");
    assert!(
        m.iter()
            .any(|x| x.contains("endpoint_ca") && x.contains("..")),
        "{m:?}"
    );
    // The opt-out: taken, and said.
    let text = minimal(&chart(&secret_s)).replacen(
        "[cluster]\n",
        "[cluster]\nallow_files_outside_inventory = true\n",
        1,
    );
    let inv = Inventory::from_str_at(&text, &inv_path).expect("allowed");
    assert!(
        inv.warnings().iter().any(|w| w
            .to_string()
            .contains("allow_files_outside_inventory = true")),
        "{:?}",
        inv.warnings()
    );
}

/// Review 3, L6: S3 over plain http or unchecked TLS needs allow_insecure, as the install
/// mirror needs allow_http; a credentials file others can read is refused; an oci:// repo
/// with credentials is refused.
#[test]
fn s3_without_tls_open_credentials_and_oci_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv_path = dir.path().join("inventory.toml");
    write_private(
        &dir.path().join("s3.toml"),
        "access_key = \"A\"\nsecret_key = \"s3cr3t\"\n",
    )
    .unwrap();
    let msgs = |extra: &str| messages_at(&minimal(extra), &inv_path);
    let s3 = "[etcd.s3]\nendpoint = \"minio.lab:9000\"\nbucket = \"b-1\"\ncredentials_file = \"s3.toml\"\n";
    assert_eq!(msgs(s3), Vec::<String>::new());
    for key in ["insecure", "skip_ssl_verify"] {
        let m = msgs(&format!("{s3}{key} = true\n"));
        assert!(
            m.iter()
                .any(|x| x.contains(&format!("etcd.s3 {key} = true"))
                    && x.contains("allow_insecure = true")),
            "{key}: {m:?}"
        );
        assert_eq!(
            msgs(&format!("{s3}{key} = true\nallow_insecure = true\n")),
            Vec::<String>::new()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o640, 0o604] {
        std::fs::set_permissions(
            dir.path().join("s3.toml"),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
        let m = msgs(s3);
        assert!(m.iter().any(|x| x.contains("chmod 600")), "{mode:o}: {m:?}");
    }
    let m = msgs("[[charts]]\nname = \"demo\"\nrepo = \"oci://user:s3cretpass@ghcr.io/org/charts\"\nchart = \"demo\"\nversion = \"1.0.0\"\nnamespace = \"apps\"\n");
    assert!(m.iter().any(|x| x.contains("carries credentials")), "{m:?}");
    assert!(m.iter().all(|x| !x.contains("s3cretpass")), "{m:?}");
}

/// The error messages of the inventory `text` read as if it were the file `at` (none when it
/// is valid).
fn messages_at(text: &str, at: &Path) -> Vec<String> {
    match Inventory::from_str_at(text, at) {
        Ok(_) => vec![],
        Err(e) => e.diagnostics().iter().map(|d| d.message.clone()).collect(),
    }
}

#[test]
fn os_table_values_and_located_errors() {
    let inv = parse(&minimal(
        "[os]\nsysctl = { \"vm.max_map_count\" = 262144, \"net.ipv4.ip_local_port_range\" = \"1024 65000\" }\ntime_sync = true\nupdates = \"security\"\nswap = \"off\"\nmax_clock_offset = 10\n",
    ))
    .unwrap();
    let os = inv.os.as_ref().unwrap();
    assert_eq!(os.sysctl["vm.max_map_count"], "262144");
    assert_eq!(os.sysctl["net.ipv4.ip_local_port_range"], "1024 65000");
    assert_eq!(os.swap, Swap::Off);
    assert_eq!(inv.max_clock_offset_secs(), 10);
    // Without [os]: nothing on the hosts, the default clock bound.
    let plain = parse(&minimal("")).unwrap();
    assert!(plain.os.is_none());
    assert_eq!(plain.max_clock_offset_secs(), DEFAULT_MAX_CLOCK_OFFSET_SECS);

    let errs = errors(&minimal(
        "[os]\nsysctl = { \"vm/max_map_count\" = 1, \"vm.swappiness\" = true, \"vm.x\" = \"a#b\" }\nupdates = \"all\"\nswap = \"maybe\"\nmax_clock_offset = 0\n",
    ));
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    for want in [
        "os.sysctl key \"vm/max_map_count\" is not a sysctl name",
        "os.sysctl \"vm.swappiness\" is a boolean",
        "os.sysctl \"vm.x\" = \"a#b\"",
        "os.updates is \"all\"",
        "os.swap is \"maybe\"",
        "os.max_clock_offset is 0",
    ] {
        assert!(all.contains(want), "{want}:\n{all}");
    }
    assert!(
        text.iter()
            .all(|t| t.starts_with("/tmp/inv/inventory.toml:")),
        "{all}"
    );
}

#[test]
fn registries_credentials_come_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret-pull\n").unwrap();
    let path = dir.path().join("inventory.toml");
    let text = minimal(
        "[registries]\nembedded_registry = true\n[registries.mirrors.\"docker.io\"]\nendpoint = [\"https://m.example.com\"]\n[registries.configs.\"m.example.com\"]\nusername = \"pull\"\npassword_file = \"pw\"\n",
    );
    let inv = Inventory::from_str_at(&text, &path).unwrap();
    let g = inv.registries.as_ref().unwrap();
    assert_eq!(g.secrets(), vec!["s3cret-pull".to_string()]);
    assert!(g.embedded_registry);
    assert!(!format!("{inv:?}").contains("s3cret-pull"));

    let errs = Inventory::from_str_at(
        &minimal(
            "[registries.mirrors.\"docker io\"]\nendpoint = []\n[registries.mirrors.\"quay.io\"]\nendpoint = [\"https://quay mirror\", \"https://u:pw-in-url@q.example.com\"]\n[registries.configs.\"m.example.com\"]\nusername = \"pull\"\npassword = 987654321\n[registries.configs.\"e.example.com\"]\nusername = \"pull\"\npassword_env = \"BOOTSTRAP_TEST_UNSET_PASSWORD\"\n",
        ),
        &path,
    )
    .unwrap_err()
    .to_string();
    for want in [
        "registries.mirrors \"docker io\" is not a registry name",
        "endpoint \"https://quay mirror\": expected https://host",
        "endpoint (with credentials, not shown): credentials in the URL",
        "a password never sits in the inventory",
        "$BOOTSTRAP_TEST_UNSET_PASSWORD is not set",
    ] {
        assert!(errs.contains(want), "{want}:\n{errs}");
    }
    // Neither a password written in the inventory nor one in a URL is ever echoed.
    assert!(
        !errs.contains("987654321") && !errs.contains("pw-in-url"),
        "{errs}"
    );
    // k3s's "*" config (every registry) is taken.
    let star = minimal("[registries.configs.\"*\"]\ninsecure_skip_verify = true\n");
    assert!(parse(&star).unwrap().registries.unwrap().configs["*"].insecure_skip_verify);

    // The embedded registry alone mirrors nothing: said.
    let alone = parse(&minimal("[registries]\nembedded_registry = true\n")).unwrap();
    assert!(
        alone
            .warnings()
            .iter()
            .any(|w| w.to_string().contains("mirrors only the registries listed")),
        "{:?}",
        alone.warnings()
    );
    // embedded-registry in both places: one source only.
    let errs = errors(&minimal(
        "[cluster.server_config]\nembedded-registry = true\n[registries]\nembedded_registry = true\n",
    ));
    assert!(
        errs.iter().any(|e| e
            .to_string()
            .contains("what [registries] embedded_registry renders")),
        "{errs:?}"
    );
}

/// Issue 28 (7): `[etcd.s3]` without keys leaves the servers to their own (root's
/// ~/.aws/credentials, the instance role: k3s's chain); the operator's environment is copied
/// only on `credentials = "env"`; a wrong value, both sources at once, and a recipient that
/// is not an age key are located errors.
#[test]
fn etcd_s3_credentials_are_the_servers_own_unless_the_inventory_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let inv_path = dir.path().join("inventory.toml");
    let text = minimal("[etcd.s3]\nendpoint = \"10.0.0.1:9443\"\nbucket = \"k3s-backups\"\n");
    let inv = Inventory::from_str_at(&text, &inv_path).unwrap();
    let s3 = inv.etcd.as_ref().unwrap().s3.as_ref().unwrap();
    assert!(s3.credentials.is_none());
    let keys: Vec<&str> = inv
        .etcd
        .as_ref()
        .unwrap()
        .server_keys()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !keys.contains(&"etcd-s3-access-key") && !keys.contains(&"etcd-s3-secret-key"),
        "{keys:?}"
    );
    write_private(
        &dir.path().join("s3.toml"),
        "access_key = \"AKIA1\"\nsecret_key = \"s\"\n",
    )
    .unwrap();
    let msgs = |extra: &str| messages_at(&minimal(extra), &inv_path);
    let m = msgs("[etcd.s3]\nbucket = \"b-1\"\ncredentials = \"instance\"\n");
    assert!(
        m.iter().any(|x| x.contains("the only value is \"env\"")),
        "{m:?}"
    );
    let m = msgs(
        "[etcd.s3]\nbucket = \"b-1\"\ncredentials = \"env\"\ncredentials_file = \"s3.toml\"\n",
    );
    assert!(m.iter().any(|x| x.contains("keep one")), "{m:?}");
    let m = msgs("[etcd.s3]\nbucket = \"b-1\"\nsecrets_recipients = [\"ssh-ed25519 AAAA\"]\n");
    assert!(
        m.iter().any(|x| x.contains("is not an age public key")),
        "{m:?}"
    );
    let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    assert!(msgs(&format!(
        "[etcd.s3]\nbucket = \"b-1\"\nsecrets_recipients = [\"{key}\"]\n"
    ))
    .is_empty());
}
