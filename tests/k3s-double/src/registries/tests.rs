//! The double's registries.yaml reader and hosts.toml writer held against upstream: k3s's own
//! test table rendered by k3s's template, yaml.v2's own errors, and hosts.toml files recorded
//! on real nodes (`tests/fixtures/upstream/`, each with its source).

use super::*;
use serde_json::Value;
use xtask::fixtures;

/// k3s `Test_UnitGetHostConfigs`: every case's hosts.toml files, byte for byte.
#[test]
fn renders_upstream_test_table() {
    let cases = fixtures::json("containerd-hosts-toml-k3s-config-test-built.json");
    let cases = cases.as_array().expect("a list of cases");
    assert_eq!(cases.len(), 46, "the whole upstream table");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["matches_upstream_want"], Value::Bool(true), "{name}");
        let mut reg =
            parse(c["registries_yaml"].as_str().unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mirror = c["embedded_registry_mirror_addr"].as_str().unwrap();
        if !mirror.is_empty() {
            let (host, port) = mirror.rsplit_once(':').unwrap();
            let e = Embedded {
                internal: host.into(),
                port: port.parse().unwrap(),
                server_ca: "server-ca".into(),
                client_cert: "client-cert".into(),
                client_key: "client-key".into(),
            };
            inject_mirror(&mut reg, &e);
        }
        let no_default = c["disable_default_registry_endpoint"].as_bool().unwrap();
        let mut log = Vec::new();
        let got: BTreeMap<String, String> = host_configs(&reg, no_default, mirror, &mut log)
            .iter()
            .map(|(h, hc)| (h.clone(), render(hc)))
            .collect();
        let want: BTreeMap<String, String> = c["hosts_toml"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(h, t)| (h.clone(), t.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
        let want_logs: Vec<String> = c["logs"]
            .as_array()
            .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let got_logs: Vec<String> = log
            .iter()
            .map(|(level, m)| format!("level={level} msg={m}"))
            .collect();
        assert_eq!(got_logs, want_logs, "{name}");
    }
}

/// gopkg.in/yaml.v2 v2.4.0 decoding into wharfie's types: what it accepts and its words.
#[test]
fn parses_and_refuses_as_yaml_v2() {
    let cases = fixtures::json("registries-yaml-yaml-v2-errors-built.json");
    for c in cases.as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        let got = parse(input).err();
        // yaml.v2 lists every type error, one a line; the double names the first (README).
        let want = c["error"]
            .as_str()
            .map(|e| e.lines().take(2).collect::<Vec<_>>().join("\n"));
        assert_eq!(got, want, "{input:?}");
    }
}

/// What yaml.v2 makes of the lenient corners (harness output in the same fixture's header).
#[test]
fn decodes_like_yaml_v2() {
    let r = parse("foo: bar\nmirrors:\n  docker.io:\n    endpoints: [x]\n    endpoint: [5, true]\nconfigs:\n  r:\n    auth:\n      token: t\n    tls:\n      insecure_skip_verify: yes\n").unwrap();
    assert_eq!(r.mirrors["docker.io"].endpoints, vec!["5", "true"]);
    assert_eq!(
        r.configs["r"].auth,
        Some(AuthConfig::default()),
        "token is not a key"
    );
    assert!(r.configs["r"].tls.as_ref().unwrap().insecure_skip_verify);
    // Quoted, the same word is a string, which yaml.v2 will not put in a bool.
    for quoted in [
        "configs:\n  r:\n    tls:\n      insecure_skip_verify: \"yes\"\n",
        "configs:\n  r:\n    tls: {insecure_skip_verify: 'on'}\n",
    ] {
        let e = parse(quoted).unwrap_err();
        assert!(e.starts_with("yaml: unmarshal errors:\n  line "), "{e}");
        assert!(e.contains("cannot unmarshal !!str `"), "{e}");
    }
    // A map named twice is merged; a key named twice keeps its last value.
    let r = parse("mirrors:\n  a.io:\n    endpoint: [x.io]\nmirrors:\n  b.io:\n    endpoint: [y.io]\n  a.io:\n    endpoint: [z.io]\n    endpoint: [w.io]\n").unwrap();
    assert_eq!(r.mirrors["a.io"].endpoints, vec!["w.io"]);
    assert_eq!(r.mirrors["b.io"].endpoints, vec!["y.io"]);
    // null pointers stay nil; an empty mapping is a config.
    let r = parse("configs:\n  a:\n    tls:\n  b:\n    tls: {}\n").unwrap();
    assert_eq!(r.configs["a"].tls, None);
    assert_eq!(r.configs["b"].tls, Some(TlsConfig::default()));
    assert_eq!(parse("").unwrap(), Registry::default());
    assert_eq!(parse("# nothing\n").unwrap(), Registry::default());
}

/// hosts.toml files recorded on real nodes: the same settings line for line. Both were written
/// by the template before k3s bc4597239 (2025-02-07), which had empty lines where `trimEmpty`
/// now puts one before each table; their other lines are what the double writes.
#[test]
fn matches_recorded_hosts_toml() {
    for (name, file) in [
        (
            "containerd-hosts-toml-docker-io-mirror-k3s-2024.txt",
            "docker.io",
        ),
        (
            "containerd-hosts-toml-http-mirror-k3s.txt",
            "192.168.10.23:5000",
        ),
    ] {
        let body = fixtures::text(name);
        let (yaml, toml) = body
            .split_once("\n---\n")
            .unwrap_or_else(|| panic!("{name}: registries.yaml, ---, then the cat"));
        let reg = parse(yaml).unwrap();
        let mut log = Vec::new();
        let hosts = host_configs(&reg, false, ":", &mut log);
        let ours = render(&hosts[file]);
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('$') && !l.contains("# cat "))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(lines(&ours), lines(toml), "{name}");
        // And the current template's empty lines: one before each table.
        assert!(ours.contains("\n\n[host]\n\n[host."), "{name}: {ours}");
    }
}

#[test]
fn writes_and_cleans_like_k3s() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent/etc/containerd/certs.d");
    // One written by k3s earlier, one the admin made, one about to be rewritten.
    for (d, first) in [
        ("old.example.com", HOSTS_TOML_HEADER),
        (
            "mine.example.com",
            "server = \"https://mine.example.com\"\n",
        ),
        ("docker.io", "server = \"x\"\n"),
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        std::fs::write(dir.join(d).join("hosts.toml"), first).unwrap();
    }
    let reg = parse("mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n").unwrap();
    let hosts: BTreeMap<String, String> = host_configs(&reg, false, ":", &mut Vec::new())
        .iter()
        .map(|(h, c)| (h.clone(), render(c)))
        .collect();
    write_hosts(&dir, &hosts).unwrap();
    assert!(!dir.join("old.example.com").exists());
    assert!(dir.join("mine.example.com/hosts.toml").exists());
    let f = dir.join("docker.io/hosts.toml");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), hosts["docker.io"]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f), 0o644);
    assert_eq!(mode(&dir.join("docker.io")), 0o700);
    // No file: every k3s-written directory goes, the admin's stays.
    write_hosts(&dir, &BTreeMap::new()).unwrap();
    assert!(!dir.join("docker.io").exists());
    assert!(dir.join("mine.example.com").exists());
}

#[test]
fn loads_as_wharfie() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("registries.yaml");
    assert_eq!(load(missing.to_str().unwrap()), Ok(Registry::default()));
    let d = tmp.path().to_str().unwrap();
    assert_eq!(load(d), Err(format!("read {d}: is a directory")));
}

/// `spegel.Config.Start`: only `mirrors` keys are mirrored, localhost ones skipped.
#[test]
fn embedded_registry_start_lines() {
    let e = Embedded::new(Path::new("/var/lib/rancher/k3s"), 6443);
    let mut reg = parse("mirrors:\n  docker.io:\n  localhost:5000:\n  \"*\":\nconfigs:\n  ghcr.io:\n    tls:\n      insecure_skip_verify: true\n").unwrap();
    inject_mirror(&mut reg, &e);
    let lines = spegel_start_lines(&reg, &e, "10.0.0.5");
    assert!(lines.contains(&(
        "error",
        "Distributed registry mirror skipping invalid registry: localhost:5000".into()
    )));
    assert!(lines.contains(&(
        "info",
        "Starting distributed registry mirror at https://10.0.0.5:6443/v2 for registries [* docker.io]".into()
    )));
    assert_eq!(
        lines.last().unwrap().1,
        "Starting distributed registry P2P node at 10.0.0.5:5001"
    );
    let mut none = parse("configs:\n  ghcr.io:\n    auth:\n      username: u\n").unwrap();
    inject_mirror(&mut none, &e);
    assert_eq!(
        spegel_start_lines(&none, &e, "10.0.0.5"),
        vec![(
            "error",
            "Not starting distributed registry mirror: no registries configured for distributed mirroring".to_string()
        )]
    );
    // The agent's mirror comes first, with its CA and client certificate.
    let hosts = host_configs(&reg, false, &e.addr(), &mut Vec::new());
    let docker = render(&hosts["docker.io"]);
    assert!(docker.contains("[host.\"https://127.0.0.1:6443/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = [\"/var/lib/rancher/k3s/agent/server-ca.crt\"]\n  client = [[\"/var/lib/rancher/k3s/agent/client-k3s-controller.crt\", \"/var/lib/rancher/k3s/agent/client-k3s-controller.key\"]]\n"), "{docker}");
}
