//! Lab tests for the k3s double: real containers with systemd, the install.sh unit, the real
//! network, and upstream kubectl (in the nodes as `k3s kubectl`, and from this machine). Each
//! test owns a lab (torn down by `LabGuard`, also on failure). They need root, like every lab
//! test.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::lab::{Fault, Lab, LabSpec};

const PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

fn apply(lab: &Lab, node: &str, yaml: &str) -> String {
    let o = lab
        .exec_stdin(
            node,
            &["k3s", "kubectl", "apply", "-f", "-"],
            yaml.as_bytes(),
        )
        .expect("exec");
    assert!(o.status.success(), "apply: {}", text(&o));
    text(&o)
}

fn nodes_json(lab: &Lab, server: &str) -> Value {
    let o = kubectl(lab, server, "get nodes -o json");
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("nodes json")
}

fn node<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|n| n["metadata"]["name"] == name)
}

fn ready(n: &Value) -> String {
    n["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            format!(
                "{}/{}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

fn events(lab: &Lab, server: &str) -> Vec<Value> {
    ok(
        lab,
        server,
        "cat /var/lib/rancher/k3s/server/double/events.jsonl",
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("event line"))
    .collect()
}

/// Upstream kubectl on this machine (the one the lab put in the node image).
fn host_kubectl() -> PathBuf {
    xtask::lab::kubectl::find().expect("an upstream kubectl")
}

/// `kubectl ARGS...` from this machine with `kubeconfig`.
fn kubectl_host(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(host_kubectl())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().expect("dir"))
        .args(args)
        .output()
        .expect("running kubectl")
}

/// The server's own `/etc/rancher/k3s/k3s.yaml`, pointed at `address` instead of 127.0.0.1.
fn kubeconfig_for(lab: &Lab, server: &str, address: &str, dir: &Path) -> PathBuf {
    let kc = ok(lab, server, "cat /etc/rancher/k3s/k3s.yaml")
        .replace("https://127.0.0.1:6443", &format!("https://{address}:6443"));
    let p = dir.join("kubeconfig");
    std::fs::write(&p, kc).expect("writing the kubeconfig");
    p
}

/// The PEM blocks of the chain a server presents on 6443 (`openssl s_client -showcerts`).
fn served_chain(connect: &str, servername: Option<&str>) -> Vec<String> {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", connect, "-showcerts"]);
    if let Some(n) = servername {
        c.args(["-servername", n]);
    }
    let o = c
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openssl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if line == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        }
        if let Some(b) = cur.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
        if line == "-----END CERTIFICATE-----" {
            blocks.extend(cur.take());
        }
    }
    blocks
}

#[test]
fn server_and_agents_contract() {
    let lab = lab(LabSpec::new("dbl-basic", 3));
    let server_ip = lab.node("master-1").expect("master-1").addr;
    install(&lab, "master-1", "server", "cluster-init: true\ntoken: s3cret\nagent-token: ag3nt\nnode-taint:\n  - node-role.kubernetes.io/control-plane=true:NoSchedule\nbogus-key: 1\nembedded-registry: true\n");
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");

    // Version format, and `k3s kubectl` is the upstream kubectl.
    let v = ok(&lab, "master-1", "k3s --version");
    let first = v.lines().next().unwrap_or("");
    assert!(first.starts_with("k3s version v1.36.3+k3s1 ("), "{v}");
    assert_eq!(v.lines().nth(1), Some("go version go1.24.6"));
    let want = xtask::lab::kubectl::version(&host_kubectl());
    let client = ok(&lab, "master-1", "k3s kubectl version --client");
    assert!(
        client.starts_with(&format!("Client Version: {want}\n")),
        "{client}"
    );

    // Files.
    let ls = ok(&lab, "master-1", "cd /var/lib/rancher/k3s/server && stat -c '%n %a %F' token agent-token node-token cred/passwd && readlink node-token");
    assert!(ls.contains("token 600 regular file"), "{ls}");
    assert!(ls.contains("agent-token 600 regular file"), "{ls}");
    assert!(ls.contains("node-token 777 symbolic link"), "{ls}");
    let ca_hash = ok(
        &lab,
        "master-1",
        "sha256sum /var/lib/rancher/k3s/server/tls/server-ca.crt | cut -d' ' -f1",
    );
    let token = ok(&lab, "master-1", "cat /var/lib/rancher/k3s/server/token");
    assert_eq!(token, format!("K10{}::server:s3cret\n", ca_hash.trim()));
    let agent_token = ok(
        &lab,
        "master-1",
        "cat /var/lib/rancher/k3s/server/agent-token",
    )
    .trim()
    .to_string();
    assert_eq!(agent_token, format!("K10{}::node:ag3nt", ca_hash.trim()));

    // TLS: the chain on 6443 ends with the CA the token's hash is of.
    let chain = served_chain(&format!("{server_ip}:6443"), None);
    assert_eq!(chain.len(), 2, "leaf and CA: {chain:?}");
    assert_eq!(
        sha256_hex(chain[1].as_bytes()),
        ca_hash.trim(),
        "the served CA hashes to the token's hash"
    );

    // The kubeconfig is real: upstream kubectl on this machine uses it; no client
    // certificate, no access.
    let kc = ok(
        &lab,
        "master-1",
        "stat -c %a /etc/rancher/k3s/k3s.yaml && cat /etc/rancher/k3s/k3s.yaml",
    );
    assert!(kc.starts_with("600\n"), "{kc}");
    assert!(
        kc.contains("server: https://127.0.0.1:6443")
            && kc.contains("client-key-data:")
            && kc.contains("current-context: default"),
        "{kc}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let kcp = kubeconfig_for(&lab, "master-1", &server_ip.to_string(), dir.path());
    let o = kubectl_host(&kcp, &["get", "nodes"]);
    assert!(
        text(&o).contains("master-1") && text(&o).contains("Ready"),
        "{}",
        text(&o)
    );
    let anonymous = dir.path().join("anonymous");
    std::fs::write(&anonymous, format!("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://{server_ip}:6443\n    insecure-skip-tls-verify: true\n  name: x\ncontexts:\n- context:\n    cluster: x\n    user: x\n  name: x\ncurrent-context: x\nusers:\n- name: x\n  user:\n    token: not-a-token\n")).unwrap();
    let o = kubectl_host(&anonymous, &["get", "nodes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("error: You must be logged in to the server (Unauthorized)"),
        "{}",
        text(&o)
    );

    let pw = ok(
        &lab,
        "master-1",
        "stat -c %a /etc/rancher/node/password && cat /etc/rancher/node/password",
    );
    let mut pw_lines = pw.lines();
    assert_eq!(pw_lines.next(), Some("600"));
    assert_eq!(pw_lines.next().map(str::len), Some(32));
    assert!(journal(&lab, "master-1", "server")
        .contains("Unknown flag --bogus-key found in config.yaml, skipping"));

    // Agents: one with the agent token and a label, one with the server token.
    install(&lab, "worker-1", "agent", &format!("server: https://{server_ip}:6443\ntoken: {agent_token}\nnode-label:\n  - node.role=database\n"));
    install(
        &lab,
        "worker-2",
        "agent",
        &format!("server: https://{server_ip}:6443\ntoken: s3cret\n"),
    );
    // registries.yaml is read as k3s's agent reads it (src/registries.rs): one that does not
    // parse is refused in yaml.v2's words on every attempt, the node does not register, and
    // systemd is never told READY; once fixed it is read again without a restart.
    let reg = "/etc/rancher/k3s/registries.yaml";
    write(
        &lab,
        "worker-2",
        reg,
        "mirrors:\n  docker.io:\n    endpoint: https://mirror.example.com\n",
    );
    start(&lab, "worker-1", "agent");
    start(&lab, "worker-2", "agent");
    wait_active(&lab, "worker-1", "agent");
    let refused = "Waiting to retrieve agent configuration; server is not ready: yaml: unmarshal errors:\\n  line 3: cannot unmarshal !!str `https:/...` into []string";
    wait_for(
        "worker-2 to refuse its registries.yaml",
        Duration::from_secs(60),
        || journal(&lab, "worker-2", "agent").contains(refused),
    );
    let j = journal(&lab, "worker-2", "agent");
    assert!(
        j.contains(&format!("Using private registry config file at {reg}")),
        "{j}"
    );
    assert_eq!(state(&lab, "worker-2", "agent"), "activating");
    assert!(node(&nodes_json(&lab, "master-1"), "worker-2").is_none());
    write(
        &lab,
        "worker-2",
        reg,
        "mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.example.com\n",
    );
    wait_active(&lab, "worker-2", "agent");
    // containerd's hosts.toml as k3s renders it, with the embedded registry (a server flag the
    // agents learn) first; only `mirrors` entries are mirrored.
    let certs = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d";
    let hosts = ok(&lab, "worker-2", &format!("cd {certs} && ls && stat -c '%a' docker.io docker.io/hosts.toml && cat docker.io/hosts.toml"));
    assert_eq!(
        hosts,
        "127.0.0.1:6443\ndocker.io\n700\n644\n# File generated by k3s. DO NOT EDIT.\nserver = \"https://registry-1.docker.io/v2\"\ncapabilities = [\"pull\", \"resolve\", \"push\"]\n\n[host]\n\n[host.\"https://127.0.0.1:6443/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = [\"/var/lib/rancher/k3s/agent/server-ca.crt\"]\n  client = [[\"/var/lib/rancher/k3s/agent/client-k3s-controller.crt\", \"/var/lib/rancher/k3s/agent/client-k3s-controller.key\"]]\n\n[host.\"https://mirror.example.com/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    let w2_ip = lab.node("worker-2").expect("worker-2").addr;
    let j = journal(&lab, "worker-2", "agent");
    assert!(j.contains(&format!("Starting distributed registry mirror at https://{w2_ip}:6443/v2 for registries [docker.io]")), "{j}");
    assert!(
        j.contains(&format!(
            "Starting distributed registry P2P node at {w2_ip}:5001"
        )),
        "{j}"
    );
    assert!(journal(&lab, "worker-1", "agent").contains("Not starting distributed registry mirror: no registries configured for distributed mirroring"));
    // A short token is trusted on first use, with k3s's warning.
    assert!(journal(&lab, "worker-2", "agent").contains("Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a CA hash. Use the full token from the server's node-token file to enable Cluster CA validation."));
    assert!(!journal(&lab, "worker-1", "agent").contains("does not include a CA hash"));
    // kubectl on an agent has no kubeconfig, as with k3s.
    let o = kubectl(&lab, "worker-1", "get nodes");
    assert!(
        text(&o).contains("The connection to the server localhost:8080 was refused"),
        "{}",
        text(&o)
    );
    let nodes = nodes_json(&lab, "master-1");
    assert_eq!(nodes["kind"], "List");
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(3));
    for n in nodes["items"].as_array().expect("items") {
        assert_eq!(ready(n), "True/KubeletReady", "{n}");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.36.3+k3s1");
        assert_eq!(
            n["metadata"]["labels"]["node.kubernetes.io/instance-type"],
            "k3s"
        );
        assert_eq!(
            n["metadata"]["finalizers"][0], "wrangler.cattle.io/managed-etcd-controller",
            "{n}"
        );
    }
    let m1 = node(&nodes, "master-1").expect("master-1");
    assert_eq!(
        m1["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    assert_eq!(
        m1["metadata"]["labels"]["node-role.kubernetes.io/etcd"],
        "true"
    );
    assert_eq!(
        m1["spec"]["taints"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );
    assert_eq!(m1["spec"]["taints"][0]["effect"], "NoSchedule");
    let w1 = node(&nodes, "worker-1").expect("worker-1");
    assert_eq!(w1["metadata"]["labels"]["node.role"], "database");
    assert_eq!(
        w1["status"]["addresses"][0]["address"],
        lab.node("worker-1").expect("w1").addr.to_string()
    );
    // The kubectl symlink dispatches on argv[0].
    let names = ok(&lab, "master-1", "kubectl get nodes -o name");
    assert_eq!(names, "node/master-1\nnode/worker-1\nnode/worker-2\n");
    // Server-side printing: the apiserver's columns.
    let table = ok(&lab, "master-1", "kubectl get nodes");
    assert!(
        table.starts_with("NAME       STATUS   ROLES                AGE"),
        "{table}"
    );
    assert!(
        table.contains("master-1   Ready    control-plane,etcd"),
        "{table}"
    );

    // The node password Secret is owned by its Node.
    let sec: Value = serde_json::from_str(&ok(
        &lab,
        "master-1",
        "k3s kubectl get secret -n kube-system worker-2.node-password.k3s -o json",
    ))
    .expect("secret json");
    let w2_uid = node(&nodes, "worker-2").expect("w2")["metadata"]["uid"].clone();
    assert_eq!(sec["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(sec["metadata"]["ownerReferences"][0]["uid"], w2_uid);

    // A wrong token is refused: the agent stays activating, the server logs join-refused.
    ok(&lab, "worker-2", "systemctl stop k3s-agent");
    write(
        &lab,
        "worker-2",
        "/etc/rancher/k3s/config.yaml",
        &format!("server: https://{server_ip}:6443\ntoken: wrong\n"),
    );
    start(&lab, "worker-2", "agent");
    wait_for("the 401", Duration::from_secs(20), || {
        journal(&lab, "worker-2", "agent").contains("Waiting to retrieve agent configuration; server is not ready: failed to retrieve configuration from server: https://127.0.0.1:6444/v1-k3s/config: 401 Unauthorized")
    });
    assert_eq!(state(&lab, "worker-2", "agent"), "activating");
    assert!(events(&lab, "master-1")
        .iter()
        .any(|e| e["kind"] == "join-refused" && e["detail"]["name"] == "worker-2"));
    // A full token whose CA hash is not the cluster's is refused before any password is sent.
    ok(&lab, "worker-2", "systemctl stop k3s-agent");
    let zeros = "0".repeat(64);
    write(
        &lab,
        "worker-2",
        "/etc/rancher/k3s/config.yaml",
        &format!("server: https://{server_ip}:6443\ntoken: K10{zeros}::node:ag3nt\n"),
    );
    start(&lab, "worker-2", "agent");
    wait_for("the CA hash refusal", Duration::from_secs(20), || {
        journal(&lab, "worker-2", "agent").contains(&format!(
            "token CA hash does not match the Cluster CA certificate hash: {zeros} != {}",
            ca_hash.trim()
        ))
    });
    assert_eq!(state(&lab, "worker-2", "agent"), "activating");

    // Same name, new host (new node password): refused until the Node is deleted; the
    // password Secret goes with the Node.
    ok(
        &lab,
        "worker-2",
        "systemctl stop k3s-agent; rm -f /etc/rancher/node/password",
    );
    write(
        &lab,
        "worker-2",
        "/etc/rancher/k3s/config.yaml",
        &format!("server: https://{server_ip}:6443\ntoken: s3cret\n"),
    );
    start(&lab, "worker-2", "agent");
    wait_for("password rejection", Duration::from_secs(20), || {
        journal(&lab, "worker-2", "agent").contains(PASSWORD_REJECTED)
    });
    assert_eq!(state(&lab, "worker-2", "agent"), "activating");
    let o = kubectl(&lab, "master-1", "delete node worker-2");
    assert_eq!(text(&o), "node \"worker-2\" deleted\n");
    wait_active(&lab, "worker-2", "agent");
    let sec: Value = serde_json::from_str(&ok(
        &lab,
        "master-1",
        "k3s kubectl get secret -n kube-system worker-2.node-password.k3s -o json",
    ))
    .expect("secret json");
    assert_eq!(sec["type"], "k3s.cattle.io/node-password");
    assert_ne!(
        sec["metadata"]["ownerReferences"][0]["uid"], w2_uid,
        "a new Secret, owned by the new Node"
    );

    // kubectl's own rules and the apiserver's errors.
    let o = kubectl(&lab, "master-1", "label node worker-1 node.role=web");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o),
        "error: 'node.role' already has a value (database), and --overwrite is false\n"
    );
    let o = kubectl(&lab, "master-1", "label node worker-1 tier=gold");
    assert_eq!(text(&o), "node/worker-1 labeled\n");
    let o = kubectl(
        &lab,
        "master-1",
        "taint node worker-1 dedicated=db:NoSchedule",
    );
    assert_eq!(text(&o), "node/worker-1 tainted\n");
    let o = kubectl(&lab, "master-1", "delete node nope");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o),
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );
    let o = kubectl(&lab, "master-1", "get widgets");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("error: the server doesn't have a resource type \"widgets\""),
        "{}",
        text(&o)
    );

    // Drain: DaemonSet pods refused without --ignore-daemonsets; evicted pods come back
    // elsewhere (here nowhere: master-1 and worker-1 are tainted, so they wait Pending).
    let out = apply(&lab, "master-1", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n");
    assert_eq!(out, "deployment.apps/web created\n");
    let o = kubectl(
        &lab,
        "master-1",
        "rollout status deployment/web --timeout=30s",
    );
    assert!(
        text(&o).ends_with("deployment \"web\" successfully rolled out\n"),
        "{}",
        text(&o)
    );
    let o = kubectl(
        &lab,
        "master-1",
        "get pods -l app=web --field-selector spec.nodeName=worker-2 -o name",
    );
    assert_eq!(text(&o).lines().count(), 2, "{}", text(&o));
    let pod = ok(
        &lab,
        "master-1",
        "k3s kubectl get pods -l app=web -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}'",
    );
    assert_eq!(pod, "ReplicaSet");
    let o = kubectl(&lab, "master-1", "drain worker-2");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/svclb-traefik-"), "{}", text(&o));
    let o = kubectl(
        &lab,
        "master-1",
        "drain worker-2 --ignore-daemonsets --delete-emptydir-data --timeout=60s",
    );
    assert!(
        o.status.success() && text(&o).contains("node/worker-2 drained"),
        "{}",
        text(&o)
    );
    let o = kubectl(
        &lab,
        "master-1",
        "wait --for=condition=Available deployment/web --timeout=2s",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o),
        "error: timed out waiting for the condition on deployments/web\n"
    );
    assert_eq!(
        text(&kubectl(&lab, "master-1", "uncordon worker-2")),
        "node/worker-2 uncordoned\n"
    );
    let o = kubectl(
        &lab,
        "master-1",
        "wait --for=condition=Available deployment/web --timeout=30s",
    );
    assert_eq!(text(&o), "deployment.apps/web condition met\n");

    // Manifests → HelmChart → helm-install Job → chart workloads; fail-jobs → Failed job.
    write(&lab, "master-1", "/var/lib/rancher/k3s/server/manifests/sealed-secrets.yaml",
        "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: sealed-secrets\n  namespace: kube-system\nspec:\n  chart: sealed-secrets\n  repo: https://bitnami.github.io/sealed-secrets\n  targetNamespace: kube-system\n  valuesContent: |-\n    fullnameOverride: sealed-secrets-controller\n");
    wait_for(
        "helm-install-sealed-secrets",
        Duration::from_secs(40),
        || {
            kubectl(
                &lab,
                "master-1",
                "get job helm-install-sealed-secrets -n kube-system",
            )
            .status
            .success()
        },
    );
    let o = kubectl(&lab, "master-1", "wait --for=condition=complete job/helm-install-sealed-secrets -n kube-system --timeout=60s");
    assert_eq!(
        text(&o),
        "job.batch/helm-install-sealed-secrets condition met\n"
    );
    let o = kubectl(&lab, "master-1", "wait --for=condition=Available deployment/sealed-secrets-controller -n kube-system --timeout=60s");
    assert!(o.status.success(), "{}", text(&o));
    let out = apply(&lab, "master-1", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k3s-double\n  namespace: kube-system\ndata:\n  fail-jobs: longhorn\n---\napiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: longhorn\n  namespace: kube-system\nspec:\n  chart: longhorn\n  targetNamespace: longhorn-system\n  createNamespace: true\n  backOffLimit: 1\n");
    assert_eq!(
        out,
        "configmap/k3s-double created\nhelmchart.helm.cattle.io/longhorn created\n"
    );
    let o = kubectl(
        &lab,
        "master-1",
        "wait --for=condition=failed job/helm-install-longhorn -n kube-system --timeout=45s",
    );
    // backOffLimit 1: the pod's container failed twice (restartPolicy OnFailure, 10 s back-off).
    assert!(o.status.success(), "{}", text(&o));
    let o = kubectl(&lab, "master-1", "get helmchart longhorn -n kube-system -o 'jsonpath={.status.conditions[?(@.type==\"Failed\")].message}'");
    assert_eq!(
        text(&o),
        "Job has reached configured number of retries without succeeding"
    );
    let ev = events(&lab, "master-1");
    for kind in [
        "start",
        "cluster-init",
        "agent-join",
        "node-registered",
        "addon-applied",
        "helm-job-created",
        "helm-job-complete",
        "helm-job-failed",
        "label",
        "taint",
        "cordon",
        "evict",
        "node-deleted",
    ] {
        assert!(ev.iter().any(|e| e["kind"] == kind), "no {kind} event");
    }

    // Stop fault: NotReady (Unknown/NodeStatusUnknown) after the grace period, with the
    // unreachable taints.
    lab.fault("worker-1", Fault::Stop).expect("stop worker-1");
    let t0 = Instant::now();
    wait_for("worker-1 NotReady", Duration::from_secs(75), || {
        node(&nodes_json(&lab, "master-1"), "worker-1")
            .map(ready)
            .as_deref()
            == Some("Unknown/NodeStatusUnknown")
    });
    eprintln!("worker-1 NotReady after {:?}", t0.elapsed());
    let n = nodes_json(&lab, "master-1");
    let taints: Vec<String> = node(&n, "worker-1").expect("w1")["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{taints:?}"
    );
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{taints:?}"
    );
    lab.fault("worker-1", Fault::Start).expect("start worker-1");
    wait_active(&lab, "worker-1", "agent");
    wait_for("worker-1 Ready again", Duration::from_secs(30), || {
        node(&nodes_json(&lab, "master-1"), "worker-1")
            .map(ready)
            .as_deref()
            == Some("True/KubeletReady")
    });

    // A server restart keeps the cluster.
    ok(&lab, "master-1", "systemctl restart k3s");
    wait_active(&lab, "master-1", "server");
    let nodes = nodes_json(&lab, "master-1");
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        node(&nodes, "worker-1").expect("w1")["metadata"]["labels"]["tier"],
        "gold"
    );
    assert!(
        kubectl(&lab, "master-1", "get helmchart longhorn -n kube-system")
            .status
            .success()
    );

    // An agent given a server-only key does not start (urfave/cli's message).
    ok(&lab, "worker-2", "systemctl stop k3s-agent");
    write(
        &lab,
        "worker-2",
        "/etc/rancher/k3s/config.yaml",
        &format!("server: https://{server_ip}:6443\ntoken: s3cret\ndisable:\n  - traefik\n"),
    );
    start(&lab, "worker-2", "agent");
    wait_for("agent usage error", Duration::from_secs(20), || {
        journal(&lab, "worker-2", "agent")
            .contains("Incorrect Usage: flag provided but not defined: -disable")
    });
    assert_ne!(state(&lab, "worker-2", "agent"), "active");
    // A restricted kubelet label stops it too.
    ok(&lab, "worker-2", "systemctl stop k3s-agent");
    write(&lab, "worker-2", "/etc/rancher/k3s/config.yaml", &format!("server: https://{server_ip}:6443\ntoken: s3cret\nnode-label:\n  - node-role.kubernetes.io/worker=true\n"));
    start(&lab, "worker-2", "agent");
    wait_for("kubelet label refusal", Duration::from_secs(20), || {
        journal(&lab, "worker-2", "agent").contains("unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [node-role.kubernetes.io/worker]")
    });
}

/// Joins through an address the serving certificate does not name fail the way k3s's do;
/// naming it in `tls-san` (or an agent's load balancer) makes them work.
#[test]
fn joins_check_the_certificate_names() {
    let spec = LabSpec {
        servers: 2,
        dns: true,
        nat: vec!["master-1".into()],
        ..LabSpec::new("dbl-names", 4)
    };
    let lab = lab(spec);
    let m1 = lab.node("master-1").expect("master-1").clone();
    let public = m1.public.expect("master-1 is behind NAT").to_string();
    let name = m1.dns.clone().expect("master-1 has a name");
    install(
        &lab,
        "master-1",
        "server",
        "cluster-init: true\ntoken: s3cret\n",
    );
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    let full = ok(&lab, "master-1", "cat /var/lib/rancher/k3s/server/token")
        .trim()
        .to_string();

    // A server joining through the name: the certificate does not carry it.
    install(
        &lab,
        "master-2",
        "server",
        &format!("server: https://{name}:6443\ntoken: {full}\n"),
    );
    start(&lab, "master-2", "server");
    // Through the NAT'd address, without the agent load balancer.
    install(
        &lab,
        "worker-1",
        "agent",
        &format!("server: https://{public}:6443\ntoken: {full}\ndisable-apiserver-lb: true\n"),
    );
    start(&lab, "worker-1", "agent");
    // An agent through its load balancer checks the certificate against 127.0.0.1, as k3s's.
    install(
        &lab,
        "worker-2",
        "agent",
        &format!("server: https://{name}:6443\ntoken: {full}\n"),
    );
    start(&lab, "worker-2", "agent");
    wait_active(&lab, "worker-2", "agent");
    wait_for("master-2's x509 error", Duration::from_secs(30), || {
        journal(&lab, "master-2", "server").contains(&format!(
            "starting kubernetes: preparing server: failed to validate token: CA cert validation failed: Get \\\"https://{name}:6443/cacerts\\\": tls: failed to verify certificate: x509: certificate is valid for kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, localhost, master-1, not {name}"
        ))
    });
    wait_for("worker-1's x509 error", Duration::from_secs(30), || {
        journal(&lab, "worker-1", "agent").contains(&format!(
            "Failed to validate connection to cluster at https://{public}:6443: CA cert validation failed: Get \\\"https://{public}:6443/cacerts\\\": tls: failed to verify certificate: x509: certificate is valid for 10.213."
        )) && journal(&lab, "worker-1", "agent").contains(&format!(", not {public}\""))
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(state(&lab, "master-2", "server"), "activating");
    assert_eq!(state(&lab, "worker-1", "agent"), "activating");
    // The names were seen on connections and not learned (tls-san-security).
    let chain = served_chain(&format!("{public}:6443"), Some(&name));
    let sans = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(chain[0].as_bytes())?;
            c.wait_with_output()
        })
        .expect("openssl x509");
    let sans = String::from_utf8_lossy(&sans.stdout).into_owned();
    assert!(!sans.contains(&name) && !sans.contains(&public), "{sans}");

    // Named in tls-san: both join (the server on its next restart by systemd).
    ok(&lab, "master-1", &format!("printf 'tls-san:\\n  - {name}\\n  - {public}\\n' >> /etc/rancher/k3s/config.yaml && systemctl restart k3s"));
    wait_active(&lab, "master-1", "server");
    wait_active(&lab, "master-2", "server");
    wait_active(&lab, "worker-1", "agent");
    let m = members(&lab, "master-1");
    assert_eq!(m.len(), 2, "{m:?}");
    let nodes = nodes_json(&lab, "master-2");
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(4));
    let chain = served_chain(&format!("{public}:6443"), Some(&name));
    assert_eq!(chain.len(), 2);
}

#[test]
fn ha_embedded_etcd() {
    let lab = three_servers("dbl-ha");
    for n in ["master-1", "master-2", "master-3"] {
        let m = members(&lab, n);
        assert_eq!(m.len(), 3, "{n}: {m:?}");
        let nodes = nodes_json(&lab, n);
        assert_eq!(nodes["items"].as_array().map(Vec::len), Some(3));
        let m3 = node(&nodes, "master-3").expect("master-3");
        assert!(
            m3["metadata"]["annotations"]["etcd.k3s.cattle.io/node-name"]
                .as_str()
                .unwrap_or("")
                .starts_with("master-3-")
        );
    }
    // Every server serves the one certificate of the cluster (dynamiclistener's Secret),
    // naming all of them.
    wait_for("one serving certificate", Duration::from_secs(20), || {
        let chains: Vec<Vec<String>> = ["master-1", "master-2", "master-3"]
            .iter()
            .map(|n| served_chain(&format!("{}:6443", lab.node(n).expect("node").addr), None))
            .collect();
        chains.iter().all(|c| c.len() == 2 && c[0] == chains[0][0])
    });
    // The same event log everywhere.
    wait_for("identical event logs", Duration::from_secs(10), || {
        let a = ok(
            &lab,
            "master-1",
            "cat /var/lib/rancher/k3s/server/double/events.jsonl",
        );
        a == ok(
            &lab,
            "master-2",
            "cat /var/lib/rancher/k3s/server/double/events.jsonl",
        ) && a
            == ok(
                &lab,
                "master-3",
                "cat /var/lib/rancher/k3s/server/double/events.jsonl",
            )
    });

    // Losing one of three keeps the API.
    lab.fault("master-1", Fault::Stop).expect("stop master-1");
    wait_for("write with master-1 down", Duration::from_secs(15), || {
        kubectl(&lab, "master-2", "create namespace ha-check")
            .status
            .success()
    });
    assert!(kubectl(&lab, "master-3", "get namespace ha-check")
        .status
        .success());
    // Losing two of three loses quorum: the API answers nothing, deletions included.
    lab.fault("master-2", Fault::Stop).expect("stop master-2");
    wait_for("no quorum", Duration::from_secs(15), || {
        !kubectl(&lab, "master-3", "get nodes").status.success()
    });
    let o = kubectl(&lab, "master-3", "delete node master-1 --timeout=5s");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("etcdserver: request timed out"),
        "{}",
        text(&o)
    );
    let o = kubectl(&lab, "master-3", "get --raw /readyz");
    assert!(text(&o).contains("[-]etcd failed"), "{}", text(&o));
    lab.fault("master-1", Fault::Start).expect("start master-1");
    lab.fault("master-2", Fault::Start).expect("start master-2");
    wait_active(&lab, "master-1", "server");
    wait_for("master-1 caught up", Duration::from_secs(20), || {
        kubectl(&lab, "master-1", "get namespace ha-check")
            .status
            .success()
    });
    assert_eq!(
        nodes_json(&lab, "master-1")["items"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Deleting the Node of a live member while another is down would leave etcd without an
    // active quorum: etcd refuses, and the Node waits (deletion pending) until it can.
    wait_active(&lab, "master-2", "server");
    lab.fault("master-3", Fault::Stop).expect("stop master-3");
    // The others notice within a few probes (one a second).
    std::thread::sleep(Duration::from_secs(5));
    let o = kubectl(&lab, "master-1", "delete node master-2 --timeout=10s");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("node \"master-2\" deleted")
            && text(&o).contains("error: timed out waiting for the condition on nodes/master-2"),
        "{}",
        text(&o)
    );
    let pending = ok(
        &lab,
        "master-1",
        "k3s kubectl get node master-2 -o jsonpath='{.metadata.deletionTimestamp}'",
    );
    assert!(!pending.is_empty(), "master-2 is being deleted");
    assert_eq!(members(&lab, "master-1").len(), 3);
    assert!(events(&lab, "master-1")
        .iter()
        .any(|e| e["kind"] == "etcd-member-remove-refused" && e["detail"]["name"] == "master-2"));
    lab.fault("master-3", Fault::Start).expect("start master-3");
    wait_for("master-2's Node gone", Duration::from_secs(40), || {
        !kubectl(&lab, "master-1", "get node master-2")
            .status
            .success()
    });
    assert_eq!(members(&lab, "master-1").len(), 2);
    wait_for("master-2 removed", Duration::from_secs(20), || {
        journal(&lab, "master-2", "server")
            .contains("the member has been permanently removed from the cluster")
    });
    ok(&lab, "master-2", "rm -rf /var/lib/rancher/k3s/server/db");
    wait_active(&lab, "master-2", "server");
    wait_for("three members again", Duration::from_secs(20), || {
        members(&lab, "master-1").len() == 3
    });

    // With quorum, deleting a server's Node removes its etcd member; that k3s exits and stays
    // out until its db is wiped.
    let o = kubectl(&lab, "master-1", "delete node master-3");
    assert!(o.status.success(), "{}", text(&o));
    wait_for("master-3 removed", Duration::from_secs(20), || {
        journal(&lab, "master-3", "server")
            .contains("the member has been permanently removed from the cluster")
    });
    assert_eq!(members(&lab, "master-1").len(), 2);
    assert!(events(&lab, "master-2")
        .iter()
        .any(|e| e["kind"] == "etcd-member-removed" && e["detail"]["name"] == "master-3"));
    std::thread::sleep(Duration::from_secs(6));
    assert_ne!(state(&lab, "master-3", "server"), "active");
    ok(&lab, "master-3", "rm -rf /var/lib/rancher/k3s/server/db");
    wait_active(&lab, "master-3", "server");
    wait_for("three members", Duration::from_secs(20), || {
        members(&lab, "master-2").len() == 3
    });

    // A server that rejoins with a CA file newer than the cluster's bootstrap data (another
    // cluster's, or one rotated on this disk) stops before it joins, in k3s's words
    // (pkg/cluster/bootstrap.go:392, tests/fixtures/upstream/bootstrap-newer-than-datastore.txt),
    // and the cluster never sees it; without the file it joins, written from the datastore.
    let o = kubectl(&lab, "master-1", "delete node master-3");
    assert!(o.status.success(), "{}", text(&o));
    wait_for("master-3 removed again", Duration::from_secs(20), || {
        members(&lab, "master-1").len() == 2
    });
    let ca = "/var/lib/rancher/k3s/server/tls/server-ca.crt";
    let theirs = ok(&lab, "master-1", &format!("cat {ca}"));
    ok(
        &lab,
        "master-3",
        &format!("systemctl stop k3s; rm -rf /var/lib/rancher/k3s/server/db; echo another-cluster > {ca}; systemctl start --no-block k3s"),
    );
    let refusal = format!("{ca} newer than datastore and could cause a cluster outage. Remove the file(s) from disk and restart to be recreated from datastore.");
    wait_for("the newer CA refused", Duration::from_secs(30), || {
        journal(&lab, "master-3", "server").contains(&refusal)
    });
    assert_ne!(state(&lab, "master-3", "server"), "active");
    assert_eq!(members(&lab, "master-1").len(), 2);
    assert_eq!(
        ok(&lab, "master-3", &format!("cat {ca}")),
        "another-cluster\n"
    );
    ok(
        &lab,
        "master-3",
        &format!("rm {ca}; systemctl restart --no-block k3s"),
    );
    wait_active(&lab, "master-3", "server");
    wait_for(
        "three members after the rejoin",
        Duration::from_secs(20),
        || members(&lab, "master-1").len() == 3,
    );
    assert_eq!(ok(&lab, "master-3", &format!("cat {ca}")), theirs);
}

/// kubectl drain's filters, PodDisruptionBudgets and grace periods, as on a real cluster.
#[test]
fn drains_honour_controllers_budgets_and_grace_periods() {
    let lab = lab(LabSpec::new("dbl-drain", 3));
    let server_ip = lab.node("master-1").expect("master-1").addr;
    install(&lab, "master-1", "server", "cluster-init: true\ntoken: s3cret\nnode-taint:\n  - node-role.kubernetes.io/control-plane=true:NoSchedule\n");
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    for w in ["worker-1", "worker-2"] {
        install(
            &lab,
            w,
            "agent",
            &format!("server: https://{server_ip}:6443\ntoken: s3cret\n"),
        );
        start(&lab, w, "agent");
    }
    wait_active(&lab, "worker-1", "agent");
    wait_active(&lab, "worker-2", "agent");
    let on_w1 = "nodeSelector: {kubernetes.io/hostname: worker-1}";
    apply(&lab, "master-1", &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\nspec:\n  {on_w1}\n  containers: [{{name: c, image: busybox}}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      {on_w1}\n      containers: [{{name: web, image: nginx}}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 2\n  selector: {{matchLabels: {{app: web}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: slow\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: slow}}}}\n  template:\n    metadata:\n      labels: {{app: slow}}\n      annotations: {{k3s-double/ignore-sigterm: \"true\"}}\n    spec:\n      {on_w1}\n      terminationGracePeriodSeconds: 6\n      volumes: [{{name: scratch, emptyDir: {{}}}}]\n      containers: [{{name: slow, image: busybox}}]\n"));
    for d in ["web", "slow"] {
        let o = kubectl(
            &lab,
            "master-1",
            &format!("rollout status deployment/{d} --timeout=60s"),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = kubectl(
        &lab,
        "master-1",
        "wait --for=condition=Ready pod/lonely --timeout=60s",
    );
    assert!(o.status.success(), "{}", text(&o));

    // A deleted pod whose container ignores SIGTERM is Terminating until its grace period ends.
    let slow = ok(
        &lab,
        "master-1",
        "k3s kubectl get pods -l app=slow -o jsonpath='{.items[0].metadata.name}'",
    );
    let t0 = Instant::now();
    ok(
        &lab,
        "master-1",
        &format!("k3s kubectl delete pod {slow} --wait=false"),
    );
    let table = ok(&lab, "master-1", &format!("k3s kubectl get pod {slow}"));
    assert!(table.contains("Terminating"), "{table}");
    let o = kubectl(
        &lab,
        "master-1",
        &format!("wait --for=delete pod/{slow} --timeout=30s"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "gone after {waited:?}, before its 6 s grace period"
    );
    let o = kubectl(
        &lab,
        "master-1",
        "rollout status deployment/slow --timeout=60s",
    );
    assert!(o.status.success(), "{}", text(&o));

    // kubectl's filters: a pod with no controller needs --force, emptyDir needs
    // --delete-emptydir-data, DaemonSet pods --ignore-daemonsets.
    let o = kubectl(
        &lab,
        "master-1",
        "drain worker-1 --ignore-daemonsets --timeout=20s",
    );
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("cannot delete Pods that declare no controller (use --force to override): default/lonely"), "{t}");
    assert!(t.contains("cannot delete Pods with local storage (use --delete-emptydir-data to override): default/slow-"), "{t}");

    // A budget that allows no disruption makes the eviction wait (kubectl retries every 5 s)
    // until drain's timeout; the pods stay.
    let o = kubectl(
        &lab,
        "master-1",
        "drain worker-1 --ignore-daemonsets --force --delete-emptydir-data --timeout=15s",
    );
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."), "{t}");
    assert!(t.contains("global timeout reached: 15s"), "{t}");
    let web = ok(
        &lab,
        "master-1",
        "k3s kubectl get pods -l app=web --field-selector spec.nodeName=worker-1 -o name",
    );
    assert_eq!(web.lines().count(), 2, "{web}");
    assert!(
        !kubectl(&lab, "master-1", "get pod lonely").status.success(),
        "evicted with --force"
    );

    // Without the budget the drain goes through.
    ok(&lab, "master-1", "k3s kubectl delete pdb web");
    let o = kubectl(
        &lab,
        "master-1",
        "drain worker-1 --ignore-daemonsets --force --delete-emptydir-data --timeout=60s",
    );
    assert!(
        o.status.success() && text(&o).contains("node/worker-1 drained"),
        "{}",
        text(&o)
    );
    let o = kubectl(&lab, "master-1", "get pods -l app=web -o wide");
    assert!(!text(&o).contains("worker-1"), "{}", text(&o));
    assert!(events(&lab, "master-1")
        .iter()
        .any(|e| e["kind"] == "evict" && e["detail"]["node"] == "worker-1"));
}
