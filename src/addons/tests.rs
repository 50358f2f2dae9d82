//! Rendering, golden files and key handling. `BLESS=1 cargo test --lib addons` rewrites the
//! golden files in tests/golden/; a missing golden file fails the test.

use std::path::PathBuf;

use super::longhorn::{plan_prereqs, PrereqFacts, PrereqFix};
use super::sealed_secrets::SealingKey;
use super::*;
use crate::inventory::Inventory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seed() -> Inventory {
    Inventory::load(root().join("inventory/seed.toml")).expect("seed inventory")
}

/// A fixed, fake key so golden files are stable (never a real key).
fn fake_key() -> SealingKey {
    SealingKey {
        cert_pem: "-----BEGIN CERTIFICATE-----\nFAKECERT\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nFAKEKEY\n-----END PRIVATE KEY-----\n".into(),
    }
}

fn check_golden(prefix: &str, files: &[ManifestFile]) {
    let dir = root().join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for f in files {
        let path = dir.join(format!("{prefix}{}", f.file));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &f.content).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == f.content => {}
            Ok(want) => failures.push(format!(
                "{} differs from the rendered {}:\n--- golden\n{want}\n--- rendered\n{}",
                path.display(),
                f.file,
                f.content
            )),
            Err(_) => failures.push(format!(
                "{} is missing; run `BLESS=1 cargo test --lib addons` and review it",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .expect("valid YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn seed_manifests_match_the_golden_files() {
    let inv = seed();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let files = spec.files(Some(&fake_key())).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "namespaces.yaml",
            "bootstrap-longhorn.yaml",
            "bootstrap-longhorn-storage.yaml",
            "bootstrap-longhorn-recurring.yaml",
            "bootstrap-traefik.yaml",
            "bootstrap-traefik-routes.yaml",
            "bootstrap-cert-manager.yaml",
            "bootstrap-cert-manager-issuers.yaml",
            "bootstrap-sealed-secrets-key.yaml",
            "bootstrap-sealed-secrets.yaml",
        ]
    );
    check_golden("seed-", &files);
}

#[test]
fn variant_manifests_match_the_golden_files() {
    // Older chart majors pick the values keys they read; a backup target and no routes.
    let text = std::fs::read_to_string(root().join("inventory/seed.toml"))
        .unwrap()
        .replace("version = \"41.3.0\"", "version = \"36.3.0\"")
        .replace("version = \"v1.21.1\"", "version = \"v1.14.5\"")
        .replace(
            "# backup_target = \"s3://dirtbikechina-longhorn@us-east-1/\"",
            "backup_target = \"s3://dirtbikechina-longhorn@us-east-1/\"",
        )
        .replace(
            "# backup_target_credential_secret",
            "backup_target_credential_secret",
        );
    let inv = Inventory::from_str_at(&text, &root().join("inventory/variant.toml"))
        .expect("variant inventory");
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let files: Vec<ManifestFile> = spec
        .files(Some(&fake_key()))
        .unwrap()
        .into_iter()
        .filter(|f| {
            [
                "bootstrap-longhorn.yaml",
                "bootstrap-traefik.yaml",
                "bootstrap-cert-manager.yaml",
            ]
            .contains(&f.file.as_str())
        })
        .collect();
    assert_eq!(files.len(), 3);
    check_golden("variant-", &files);
}

#[test]
fn every_manifest_is_valid_yaml_with_the_contract() {
    let inv = seed();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    for f in spec.files(Some(&fake_key())).unwrap() {
        let docs = yaml_docs(&f.content);
        assert!(!docs.is_empty(), "{} is empty", f.file);
        for d in &docs {
            if d["kind"] == "HelmChart" {
                // abort only where a reinstall would lose data (Longhorn's volumes).
                let want = if d["metadata"]["name"] == "longhorn" {
                    "abort"
                } else {
                    "reinstall"
                };
                assert_eq!(d["spec"]["failurePolicy"], want, "{}", f.file);
                let timeout = d["spec"]["timeout"].as_str();
                assert_eq!(
                    timeout.is_some(),
                    d["metadata"]["name"] == "cert-manager",
                    "{}",
                    f.file
                );
                assert_eq!(d["metadata"]["namespace"], "kube-system");
                let values: serde_yaml::Value =
                    serde_yaml::from_str(d["spec"]["valuesContent"].as_str().unwrap()).unwrap();
                assert!(values.is_mapping(), "{}", f.file);
            }
            if d["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("traefik")
            {
                assert_eq!(d["apiVersion"], "traefik.io/v1alpha1");
            }
        }
        // AddOn names must be RFC 1123 and the chart versions pinned.
        assert!(f
            .addon_name()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(!f.content.contains("timestamp"));
    }
    let lh = &spec.files(Some(&fake_key())).unwrap()[1];
    let docs = yaml_docs(&lh.content);
    let values: serde_yaml::Value =
        serde_yaml::from_str(docs[0]["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    // The seed makes longhorn-retain the default, so the chart's class is not.
    assert_eq!(values["persistence"]["defaultClass"], false);
    assert_eq!(values["defaultSettings"]["defaultReplicaCount"], 2);
    assert!(values
        .get("defaultSettings")
        .unwrap()
        .get("backupTarget")
        .is_none());
}

#[test]
fn rendering_is_deterministic() {
    let inv = seed();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let files = || -> Vec<(String, String)> {
        spec.files(Some(&fake_key()))
            .unwrap()
            .into_iter()
            .map(|f| (f.file, f.content))
            .collect()
    };
    let a = files();
    assert!(a.len() >= 4, "{} files", a.len());
    assert_eq!(a, files());
}

#[test]
fn values_keys_follow_the_chart_major() {
    assert_eq!(traefik::redirect_layout("41.3.0"), "http");
    assert_eq!(traefik::redirect_layout("39.0.0"), "http");
    assert_eq!(traefik::redirect_layout("38.0.2"), "redirections");
    assert_eq!(traefik::redirect_layout("34.2.0"), "redirections");
    assert_eq!(traefik::redirect_layout("33.2.1"), "redirectTo");
    assert_eq!(cert_manager::crds_key("v1.21.2"), "crds");
    assert_eq!(cert_manager::crds_key("v1.15.0"), "crds");
    assert_eq!(cert_manager::crds_key("v1.14.5"), "installCRDs");
}

#[test]
fn extra_manifests_render_variables_and_fail_on_unknown_ones() {
    let vars: std::collections::BTreeMap<String, String> =
        [("cluster".to_string(), "demo".to_string())].into();
    let out = manifests::render("ns", "a: {{ variables.cluster }}\n", &vars).unwrap();
    assert_eq!(out, "a: demo\n");
    let err = manifests::render("ns", "a: {{ variables.nope }}\n", &vars).unwrap_err();
    assert!(err.to_string().contains("ns"), "{err}");
}

fn facts(lines: &str) -> PrereqFacts {
    let mut f = PrereqFacts::default();
    for l in lines.lines() {
        if let Some((k, v)) = l.split_once('\t') {
            f.parse_line(k, v);
        }
    }
    f
}

const ALL_OK: &str =
    "bin.iscsiadm\tyes\nbin.mount.nfs\tyes\nbin.cryptsetup\tyes\nbin.dmsetup\tyes\n\
iscsid\tinactive/active\nmultipathd\tinactive/inactive\nmultipath.maps\t0\n\
mod.iscsi_tcp\tloaded\nmod.dm_crypt\tloaded\nmod.nfs\tloaded\ncontainer\t\n";

#[test]
fn prerequisites_satisfied_need_nothing() {
    let p = plan_prereqs("w1", "debian", &facts(ALL_OK));
    assert_eq!(p, Default::default());
}

#[test]
fn missing_prerequisites_are_fixed_on_debian() {
    let f = facts(
        &ALL_OK
            .replace("bin.iscsiadm\tyes", "bin.iscsiadm\tno")
            .replace("iscsid\tinactive/active", "iscsid\tinactive/inactive")
            .replace("mod.dm_crypt\tloaded", "mod.dm_crypt\tavailable")
            .replace(
                "multipathd\tinactive/inactive",
                "multipathd\tactive/inactive",
            ),
    );
    let p = plan_prereqs("w1", "debian", &f);
    assert_eq!(
        p.fixes,
        vec![
            PrereqFix::Install(vec!["open-iscsi".into()]),
            PrereqFix::StartIscsid,
            PrereqFix::DisableMultipathd,
            PrereqFix::LoadModules(vec!["dm_crypt".into()]),
        ]
    );
    assert!(p.errors.is_empty());
}

#[test]
fn unfixable_prerequisites_name_the_node() {
    let f = facts(
        &ALL_OK
            .replace("bin.cryptsetup\tyes", "bin.cryptsetup\tno")
            .replace("mod.iscsi_tcp\tloaded", "mod.iscsi_tcp\tmissing")
            .replace("multipath.maps\t0", "multipath.maps\t2")
            .replace("multipathd\tinactive/inactive", "multipathd\tactive/active"),
    );
    let p = plan_prereqs("worker-2", "rocky", &f);
    assert!(p.fixes.is_empty(), "{p:?}");
    assert_eq!(p.errors.len(), 3, "{p:?}");
    assert!(p.errors.iter().all(|e| e.starts_with("worker-2: ")));
    assert!(p.errors.iter().any(|e| e.contains("cryptsetup")));
    assert!(p.errors.iter().any(|e| e.contains("iscsi_tcp")));
    assert!(p.errors.iter().any(|e| e.contains("multipathd")));
}

#[test]
fn a_missing_nfs_module_is_a_warning() {
    // Only RWX volumes and NFS backup targets need it; the rest of Longhorn works.
    let f = facts(&ALL_OK.replace("mod.nfs\tloaded", "mod.nfs\tmissing"));
    let p = plan_prereqs("w1", "debian", &f);
    assert!(p.errors.is_empty() && p.fixes.is_empty(), "{p:?}");
    assert!(p.warnings[0].contains("nfs"), "{p:?}");
    let f = facts(&ALL_OK.replace("mod.nfs\tloaded", "mod.nfs\tavailable"));
    assert_eq!(
        plan_prereqs("w1", "debian", &f).fixes,
        vec![PrereqFix::LoadModules(vec!["nfs".into()])]
    );
}

#[test]
fn modules_in_a_container_are_a_warning() {
    let f = facts(
        &ALL_OK
            .replace("mod.iscsi_tcp\tloaded", "mod.iscsi_tcp\tmissing")
            .replace("container\t", "container\tsystemd-nspawn"),
    );
    let p = plan_prereqs("w1", "debian", &f);
    assert!(p.errors.is_empty() && p.fixes.is_empty(), "{p:?}");
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("iscsi_tcp") && p.warnings[0].contains("systemd-nspawn"));
}

#[test]
fn sealing_key_is_rsa_4096_and_round_trips_through_backup_and_secret() {
    use base64::Engine;
    let k = SealingKey::generate().unwrap();
    assert!(k.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(k.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // 4096-bit RSA: a PKCS#8 DER of about 2.3 KB.
    let der: String = k
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    assert!(der.len() > 2300, "{}", der.len());
    // Masked from output.
    assert!(!crate::ssh::redact(&k.key_pem).contains("PRIVATE KEY-----\nMII"));

    let dir = tempfile::tempdir().unwrap();
    assert_eq!(SealingKey::load_backup(dir.path()).unwrap(), None);
    k.save_backup(dir.path()).unwrap();
    let (crt, key) = SealingKey::backup_paths(dir.path());
    use std::os::unix::fs::PermissionsExt;
    for p in [&crt, &key] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    assert_eq!(
        SealingKey::load_backup(dir.path()).unwrap(),
        Some(k.clone())
    );

    // The Secret manifest, read back the way kubectl prints it.
    let spec = AddonsSpec {
        sealed_secrets: Some(crate::inventory::SealedSecrets {
            version: "2.19.1".into(),
            chart_archive: None,
            crds_applied: None,
        }),
        ..Default::default()
    };
    let files = spec.files(Some(&k)).unwrap();
    let secret = &files[0];
    assert_eq!(secret.file, "bootstrap-sealed-secrets-key.yaml");
    assert_eq!(secret.mode, 0o600);
    let doc: serde_yaml::Value = yaml_docs(&secret.content).remove(0);
    assert_eq!(
        doc["metadata"]["labels"]["sealedsecrets.bitnami.com/sealed-secrets-key"],
        "active"
    );
    assert_eq!(doc["type"], "kubernetes.io/tls");
    let json = serde_json::to_string(&doc).unwrap();
    assert_eq!(SealingKey::from_secret_json(&json).unwrap(), Some(k));
    assert_eq!(SealingKey::from_secret_json("").unwrap(), None);

    // One half of the backup is an error, not a silent new key.
    std::fs::remove_file(&crt).unwrap();
    assert!(SealingKey::load_backup(dir.path()).is_err());
}

#[test]
fn health_is_judged_from_one_snapshot() {
    use health::{evaluate, JobState, Snapshot};
    let snap = |extra: &str| {
        Snapshot::parse(&format!(
            r#"{{"items": [
            {{"kind": "HelmChart", "metadata": {{"name": "sealed-secrets", "namespace": "kube-system"}}}},
            {{"kind": "Job", "metadata": {{"name": "helm-install-sealed-secrets", "namespace": "kube-system"}}, "status": {{"succeeded": 1}}}},
            {{"kind": "CustomResourceDefinition", "metadata": {{"name": "sealedsecrets.bitnami.com"}}}},
            {{"kind": "Service", "metadata": {{"name": "sealed-secrets-controller", "namespace": "kube-system"}}}}
            {extra}]}}"#
        ))
        .unwrap()
    };
    let h = evaluate(&snap(""), &AddonKind::SealedSecrets.release(""));
    assert_eq!(h.job, JobState::Complete);
    assert!(!h.healthy());
    assert!(
        h.summary()
            .contains("Deployment kube-system/sealed-secrets-controller missing"),
        "{}",
        h.summary()
    );
    let not_ready = r#",{"kind": "Deployment", "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system"}, "spec": {"replicas": 1}, "status": {}}"#;
    let h = evaluate(&snap(not_ready), &AddonKind::SealedSecrets.release(""));
    assert!(
        h.summary().contains("0 of 1 new replicas updated"),
        "{}",
        h.summary()
    );
    let ready = not_ready.replace(
        r#""status": {}"#,
        r#""status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}"#,
    );
    assert!(evaluate(&snap(&ready), &AddonKind::SealedSecrets.release("")).healthy());
    let failed = Snapshot::parse(
        r#"{"items": [{"kind": "HelmChart", "metadata": {"name": "traefik", "namespace": "kube-system"}},
        {"kind": "Job", "metadata": {"name": "helm-install-traefik", "namespace": "kube-system"},
         "status": {"conditions": [{"type": "Failed", "status": "True"}]}}]}"#,
    )
    .unwrap();
    assert_eq!(
        evaluate(&failed, &AddonKind::Traefik.release("ingress-system")).job,
        JobState::Failed
    );
}

#[test]
fn a_chart_archive_is_embedded_as_chart_content() {
    let inv = seed();
    let mut spec = AddonsSpec::from_inventory(&inv).unwrap();
    spec.chart_content
        .insert(AddonKind::SealedSecrets, "H4sIAAAA".into());
    let files = spec.files(Some(&fake_key())).unwrap();
    let chart = files
        .iter()
        .find(|f| f.file == "bootstrap-sealed-secrets.yaml")
        .unwrap();
    let doc = yaml_docs(&chart.content).remove(0);
    assert_eq!(doc["spec"]["chartContent"], "H4sIAAAA");
    assert!(doc["spec"].get("repo").is_none(), "{}", chart.content);
    // The others still come from their repositories.
    assert!(files[1]
        .content
        .contains("repo: \"https://charts.longhorn.io\""));
}

#[test]
fn chart_archive_is_validated_and_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    std::fs::copy(
        root().join("inventory/manifests/namespaces.yaml"),
        dir.path().join("manifests/namespaces.yaml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(root().join("inventory/seed.toml")).unwrap();
    let with = |archive: &str| {
        text.replace(
            "[addons.sealed_secrets]\nversion = \"2.19.1\"",
            &format!(
                "[addons.sealed_secrets]\nversion = \"2.19.1\"\nchart_archive = \"{archive}\""
            ),
        )
    };
    let path = dir.path().join("inventory.toml");
    let err = Inventory::from_str_at(&with("charts/missing.tgz"), &path).unwrap_err();
    assert!(err.to_string().contains("chart_archive"), "{err}");
    std::fs::create_dir_all(dir.path().join("charts")).unwrap();
    std::fs::write(dir.path().join("charts/ss.tgz"), b"\x1f\x8bfake").unwrap();
    let inv = Inventory::from_str_at(&with("charts/ss.tgz"), &path).unwrap();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    assert_eq!(spec.chart_content[&AddonKind::SealedSecrets], "H4tmYWtl");
}

/// [`get_all`](health::get_all)'s output: the objects, the release records (`namespace name
/// revision status hash`, as table lines with labels), the helm pods.
fn health_text(objects: &str, releases: &str, pods: &str) -> String {
    let rows: Vec<String> = releases
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hash = f
                .get(4)
                .map(|h| format!(",helmcharts.helm.cattle.io/configHash={h}"))
                .unwrap_or_default();
            format!(
                "{}   sh.helm.release.v1.{}.v{}   helm.sh/release.v1   1   5m   modifiedAt=1,name={},owner=helm,status={},version={}{hash}",
                f[0], f[1], f[2], f[1], f[3], f[2]
            )
        })
        .collect();
    format!(
        "#bootstrap-objects\n{objects}\n#bootstrap-releases\n{}\n#bootstrap-helm-pods\n{pods}\n",
        rows.join("\n")
    )
}

#[test]
fn health_is_the_release_not_the_job() {
    use health::{evaluate, Snapshot};
    // The hash where helm-controller writes it: the pod template and CONFIG_HASH (chart.go
    // :1500, :684-690); nothing on the Job's own metadata (:854-860).
    let list = r#"{"items": [
        {"kind": "HelmChart", "metadata": {"name": "sealed-secrets", "namespace": "kube-system"},
         "spec": {"version": "2.19.1", "failurePolicy": "reinstall"}},
        {"kind": "Job", "metadata": {"name": "helm-install-sealed-secrets", "namespace": "kube-system", "uid": "j1"},
         "spec": {"template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=ABC"}},
           "spec": {"containers": [{"env": [{"name": "VERSION", "value": "2.19.1"}, {"name": "FAILURE_POLICY", "value": "reinstall"}, {"name": "CONFIG_HASH", "value": "ABC"}]}]}}},
         "status": {"succeeded": 1}},
        {"kind": "CustomResourceDefinition", "metadata": {"name": "sealedsecrets.bitnami.com"}},
        {"kind": "Deployment", "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system"}, "spec": {"replicas": 1}, "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}},
        {"kind": "Service", "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system"}}]}"#;
    let snap =
        |releases: &str| Snapshot::parse(&health_text(list, releases, r#"{"items": []}"#)).unwrap();
    let h = |releases: &str| evaluate(&snap(releases), &AddonKind::SealedSecrets.release(""));
    assert!(h("kube-system sealed-secrets 1 deployed ABC").healthy());
    // A completed Job with a failed release is not healthy, nor is no release at all.
    let failed =
        h("kube-system sealed-secrets 1 deployed ABC\nkube-system sealed-secrets 2 failed ABC");
    assert!(!failed.healthy() && failed.release_failed());
    assert!(
        failed.summary().contains("revision 2 is failed"),
        "{}",
        failed.summary()
    );
    assert!(!h("").healthy());
    // Deployed, but of an older config (helm-controller is about to run the Job again).
    let old = h("kube-system sealed-secrets 1 deployed OLD");
    assert!(!old.healthy());
    assert!(
        old.summary().contains("not of the current chart config"),
        "{}",
        old.summary()
    );
    // helm-controller before v0.17.4 passes no CONFIG_HASH, and klipper-helm labels none.
    let unhashed = list.replace(r#", {"name": "CONFIG_HASH", "value": "ABC"}"#, "");
    let s = Snapshot::parse(&health_text(
        &unhashed,
        "kube-system sealed-secrets 1 deployed",
        r#"{"items": []}"#,
    ))
    .unwrap();
    assert!(evaluate(&s, &AddonKind::SealedSecrets.release("")).healthy());
    // Another namespace's release of the same name is not this one.
    assert!(!h("default sealed-secrets 1 deployed ABC").healthy());
    // A Job still of the previous chart version is not judged complete.
    let bumped = list.replace(
        r#""spec": {"version": "2.19.1", "failurePolicy""#,
        r#""spec": {"version": "2.19.2", "failurePolicy""#,
    );
    let s = Snapshot::parse(&health_text(
        &bumped,
        "kube-system sealed-secrets 1 deployed ABC",
        r#"{"items": []}"#,
    ))
    .unwrap();
    assert!(!evaluate(&s, &AddonKind::SealedSecrets.release("")).healthy());
    // The Job's own metadata is not where the hash is: a Job carrying it only there (as the
    // double once wrote it) has no hash for the release to match.
    let misplaced = list
        .replace(
            r#""spec": {"template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=ABC"}},"#,
            r#""spec": {"template": {"#,
        )
        .replace(
            r#""uid": "j1"},"#,
            r#""uid": "j1", "annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=XYZ"}},"#,
        );
    let s = Snapshot::parse(&health_text(
        &misplaced,
        "kube-system sealed-secrets 1 deployed XYZ",
        r#"{"items": []}"#,
    ))
    .unwrap();
    assert!(!evaluate(&s, &AddonKind::SealedSecrets.release("")).healthy());
}

#[test]
fn a_values_only_change_waits_for_helm_controller_to_take_the_values() {
    use health::{evaluate, values_digest, Snapshot};
    let list = r#"{"items": [
        {"kind": "HelmChart", "metadata": {"name": "sealed-secrets", "namespace": "kube-system"},
         "spec": {"version": "2.19.1", "failurePolicy": "reinstall"}},
        {"kind": "Job", "metadata": {"name": "helm-install-sealed-secrets", "namespace": "kube-system", "uid": "j1"},
         "spec": {"template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=ABC"}},
           "spec": {"containers": [{"env": [{"name": "VERSION", "value": "2.19.1"}, {"name": "CONFIG_HASH", "value": "ABC"}]}]}}},
         "status": {"succeeded": 1}}]}"#;
    let mut rel = AddonKind::SealedSecrets.release("");
    rel.wants.clear();
    rel.values_digest = Some(values_digest("keyrenewperiod: \"0\"\n"));
    let text = |secret_values: &str| {
        format!(
            "#bootstrap-values\nchart-values-sealed-secrets {} {}\n{}",
            values_digest(secret_values),
            values_digest(""),
            health_text(
                list,
                "kube-system sealed-secrets 1 deployed ABC",
                r#"{"items": []}"#
            )
        )
    };
    // The old values are still in helm-controller's Secret: the complete Job and its
    // release are of the previous config.
    let h = evaluate(&Snapshot::parse(&text("old: 1\n")).unwrap(), &rel);
    assert!(!h.healthy());
    assert_eq!(h.job, health::JobState::Pending);
    assert!(
        h.summary().contains("has not taken the new values"),
        "{}",
        h.summary()
    );
    let h = evaluate(
        &Snapshot::parse(&text("keyrenewperiod: \"0\"\n")).unwrap(),
        &rel,
    );
    assert!(h.healthy(), "{}", h.summary());
    // No values section read (an older reader): not judged on values.
    let h = evaluate(
        &Snapshot::parse(&health_text(
            list,
            "kube-system sealed-secrets 1 deployed ABC",
            r#"{"items": []}"#,
        ))
        .unwrap(),
        &rel,
    );
    assert!(h.healthy(), "{}", h.summary());
}

#[test]
fn a_failed_attempt_is_read_from_the_pod_and_reported_with_the_way_out() {
    use health::{evaluate, failure_report, Snapshot};
    let objects = r#"{"items": [
        {"kind": "HelmChart", "metadata": {"name": "longhorn", "namespace": "kube-system"}, "spec": {"version": "1.12.1", "failurePolicy": "abort"}},
        {"kind": "Job", "metadata": {"name": "helm-install-longhorn", "namespace": "kube-system", "uid": "j1"},
         "spec": {"template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=ABC"}},
           "spec": {"containers": [{"env": [{"name": "VERSION", "value": "1.12.1"}, {"name": "FAILURE_POLICY", "value": "abort"}]}]}}}, "status": {"active": 1}}]}"#;
    let pods = r#"{"items": [{"kind": "Pod", "metadata": {"name": "helm-install-longhorn-abcde", "namespace": "kube-system",
   "ownerReferences": [{"kind": "Job", "name": "helm-install-longhorn", "uid": "j1"}]},
  "status": {"containerStatuses": [{"name": "helm", "restartCount": 2,
     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
     "lastState": {"terminated": {"exitCode": 1, "message": "Release status is 'failed' and failure policy is 'abort'; waiting for operator intervention"}}}]}}]}"#;
    let h = evaluate(
        &Snapshot::parse(&health_text(
            objects,
            "longhorn-system longhorn 1 failed ABC",
            pods,
        ))
        .unwrap(),
        &AddonKind::Longhorn.release(""),
    );
    let a = h.failed_attempt.clone().expect("the pod's failed attempt");
    assert_eq!(
        (a.pod.as_str(), a.failures),
        ("helm-install-longhorn-abcde", 2)
    );
    assert!(h.release_failed() && !h.healthy() && h.stuck());
    let msg = failure_report(&h, "some log line");
    assert!(msg.starts_with("add-on longhorn: helm-controller could not install the chart (pod kube-system/helm-install-longhorn-abcde, failed attempt 2"), "{msg}");
    assert!(msg.contains("waiting for operator intervention"), "{msg}");
    assert!(msg.contains("    some log line"), "{msg}");
    assert!(
        msg.contains("k3s kubectl -n longhorn-system delete secret sh.helm.release.v1.longhorn.v1"),
        "{msg}"
    );
}

#[test]
fn every_apt_get_call_of_the_package_fix_is_bounded() {
    let s = longhorn::fix_script(&longhorn::PrereqFix::Install(vec!["open-iscsi".into()]));
    let calls = s.matches("run apt-get").count();
    assert_eq!(calls, 3, "{s}");
    assert!(
        s.contains(&format!("t='timeout -k 5 {}'", longhorn::APT_STEP_SECS)),
        "{s}"
    );
    assert!(
        !s.contains("; apt-get ") && !s.contains("|| apt-get"),
        "an unbounded call: {s}"
    );
    assert!(
        s.contains("is a package mirror reachable from this host?"),
        "{s}"
    );
}

/// What sealed-secrets' `kubeseal --raw` prints has this shape: base64 of a length, an
/// RSA-OAEP session key and AES-GCM ciphertext (here: 300 bytes of nothing).
fn fake_sealed() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The placeholders `inventory/platform.toml` ships for `kubeseal --raw` outputs: Velero's
/// credentials file, and PostgreSQL's backup key ID and secret. Each is its own, so that the
/// refusal names the variable it came from.
const PLATFORM_PLACEHOLDERS: [&str; 3] = [
    "REPLACE-with-the-output-of-kubeseal-raw",
    "REPLACE-with-the-output-of-kubeseal-raw-for-ACCESS_KEY_ID",
    "REPLACE-with-the-output-of-kubeseal-raw-for-ACCESS_SECRET_KEY",
];

/// `platform.toml`'s text with every placeholder but `keep` sealed.
fn platform_text_sealed_but(keep: Option<&str>) -> String {
    let path = root().join("inventory/platform.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for p in PLATFORM_PLACEHOLDERS.iter().filter(|p| Some(**p) != keep) {
        let quoted = format!("\"{p}\"");
        assert_eq!(text.matches(&quoted).count(), 1, "{p} in platform.toml");
        text = text.replace(&quoted, &format!("\"{}\"", fake_sealed()));
    }
    text
}

/// `inventory/platform.toml` with its credentials sealed (the file ships placeholders).
fn platform_sealed() -> Inventory {
    let path = root().join("inventory/platform.toml");
    Inventory::from_str_at(&platform_text_sealed_but(None), &path).expect("platform inventory")
}

#[test]
fn a_placeholder_in_a_sealed_secret_is_refused_with_the_way_to_seal_it() {
    let inv = Inventory::load(root().join("inventory/platform.toml")).expect("platform inventory");
    let e = AddonsSpec::from_inventory(&inv).unwrap_err().to_string();
    for want in [
        "SealedSecret infra/velero-s3-credentials key cloud is \"REPLACE-with-the-output-of-kubeseal-raw\" (from [variables] velero_cloud_sealed)",
        "bootstrap sealed-secrets cert ",
        "kubeseal --raw --cert sealing.pem --namespace infra --name velero-s3-credentials --from-file FILE",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // Plain base64 of a short secret is not sealed either.
    let path = root().join("inventory/platform.toml");
    let text = platform_text_sealed_but(Some(PLATFORM_PLACEHOLDERS[0])).replace(
        "\"REPLACE-with-the-output-of-kubeseal-raw\"",
        "\"c2VjcmV0\"",
    );
    let inv = Inventory::from_str_at(&text, &path).unwrap();
    let e = AddonsSpec::from_inventory(&inv).unwrap_err().to_string();
    assert!(
        e.contains("velero-s3-credentials key cloud is \"c2VjcmV0\""),
        "{e}"
    );
    // PostgreSQL's backup credentials: each placeholder names its own variable.
    for (key, var) in [
        ("ACCESS_KEY_ID", "pg_backup_access_key_id_sealed"),
        ("ACCESS_SECRET_KEY", "pg_backup_secret_access_key_sealed"),
    ] {
        let placeholder = format!("REPLACE-with-the-output-of-kubeseal-raw-for-{key}");
        let inv =
            Inventory::from_str_at(&platform_text_sealed_but(Some(&placeholder)), &path).unwrap();
        let e = AddonsSpec::from_inventory(&inv).unwrap_err().to_string();
        let shown: String = placeholder.chars().take(40).collect();
        for want in [
            format!("manifest postgres-backup-credentials: SealedSecret infra/pg-backup-s3-credentials key {key} is \"{shown}\" (from [variables] {var})"),
            "kubeseal --raw --cert sealing.pem --namespace infra --name pg-backup-s3-credentials".to_string(),
        ] {
            assert!(e.contains(&want), "{want}: {e}");
        }
    }
    assert!(AddonsSpec::from_inventory(&platform_sealed()).is_ok());
}

/// Issue 17: `inventory/platform.toml`'s charts and manifests, byte for byte.
#[test]
fn platform_charts_match_the_golden_files() {
    let inv = platform_sealed();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let files = spec.files(Some(&fake_key())).unwrap();
    let charts: Vec<ManifestFile> = files
        .iter()
        .filter(|f| {
            matches!(f.owner, Owner::Chart(_))
                || f.file.ends_with(".yaml") && !f.file.starts_with(PREFIX)
        })
        .cloned()
        .collect();
    let names: Vec<&str> = charts.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "namespaces.yaml",
            "network-policies.yaml",
            "postgres.yaml",
            "velero-credentials.yaml",
            "postgres-backup-credentials.yaml",
            "traefik-podmonitor.yaml",
            "bootstrap-chart-cloudnative-pg.yaml",
            "bootstrap-chart-velero.yaml",
            "bootstrap-chart-kube-prometheus-stack.yaml",
            "bootstrap-chart-loki.yaml",
            "bootstrap-chart-fluent-bit.yaml",
            "bootstrap-chart-flagger.yaml",
        ]
    );
    check_golden("platform-", &charts);
    // Every chart file is one HelmChart whose values parse; the release names its namespace.
    for f in charts.iter().filter(|f| matches!(f.owner, Owner::Chart(_))) {
        let docs = yaml_docs(&f.content);
        assert_eq!(docs.len(), 1, "{}", f.file);
        assert_eq!(docs[0]["kind"], "HelmChart");
        assert_eq!(docs[0]["spec"]["createNamespace"], true);
        let values = docs[0]["spec"]["valuesContent"].as_str().unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(values).unwrap();
        assert!(v.is_mapping(), "{}: {values}", f.file);
    }
    let flagger = yaml_docs(
        &files
            .iter()
            .find(|f| f.file == "bootstrap-chart-flagger.yaml")
            .unwrap()
            .content,
    );
    let values: serde_yaml::Value =
        serde_yaml::from_str(flagger[0]["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(values["meshProvider"], "traefik");
    // The NetworkPolicies: one per environment.
    let np = files
        .iter()
        .find(|f| f.file == "network-policies.yaml")
        .unwrap();
    let ns: Vec<String> = yaml_docs(&np.content)
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ns, ["prod", "stage", "dev", "test"]);
    // Stages: the Cluster waits for its operator and Longhorn, Flagger for Traefik and kps.
    let stage = |file: &str| files.iter().find(|f| f.file == file).unwrap().stage.clone();
    assert_eq!(
        stage("postgres.yaml"),
        Stage::After(vec!["cloudnative-pg".into(), "longhorn".into()])
    );
    assert_eq!(
        stage("postgres-backup-credentials.yaml"),
        Stage::After(vec!["sealed-secrets".into()])
    );
    assert_eq!(stage("bootstrap-chart-cloudnative-pg.yaml"), Stage::Base);
    assert_eq!(
        stage("bootstrap-chart-flagger.yaml"),
        Stage::After(vec!["traefik".into(), "kube-prometheus-stack".into()])
    );
}

/// One object held against a CRD version's `openAPIV3Schema` as the apiserver holds it on
/// create: types, `required`, `enum`, `pattern`, lengths and bounds, and no field the schema
/// does not have (the apiserver would prune it without a word: a misspelt `retentionPolicy`
/// would leave the Cluster without retention). CEL rules (`x-kubernetes-validations`) are
/// evaluated by `cel`, which must know every rule met on the object's path; transition rules
/// (`oldSelf`) do not apply on create. Every failure is named by its path.
fn crd_errors(
    schema: &serde_json::Value,
    v: &serde_json::Value,
    path: &str,
    errs: &mut Vec<String>,
) {
    use serde_json::Value;
    let s = |k: &str| schema.get(k);
    if v.is_null() {
        if s("nullable") != Some(&Value::Bool(true)) {
            errs.push(format!("{path}: null"));
        }
        return;
    }
    for rule in s("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = rule["rule"].as_str().unwrap_or("");
        if r.contains("oldSelf") {
            continue;
        }
        match cel(r, v) {
            Some(true) => {}
            Some(false) => errs.push(format!("{path}: {}", rule["message"])),
            None => errs.push(format!(
                "{path}: no evaluator for the CEL rule `{r}`: add one to cel()"
            )),
        }
    }
    let int_or_string = s("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(any) = s("anyOf")
        .and_then(Value::as_array)
        .filter(|_| !int_or_string)
    {
        let fits = any.iter().any(|sub| {
            let mut e = Vec::new();
            crd_errors(sub, v, path, &mut e);
            e.is_empty()
        });
        if !fits {
            errs.push(format!("{path}: matches none of anyOf"));
        }
    }
    if let Some(allowed) = s("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            errs.push(format!(
                "{path}: {v} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
    }
    let ty = s("type").and_then(Value::as_str).unwrap_or("");
    let ok_type = match ty {
        _ if int_or_string => v.is_i64() || v.is_u64() || v.is_string(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "" => true,
        other => panic!("{path}: schema type {other}"),
    };
    if !ok_type {
        errs.push(format!("{path}: {v} is not of type {ty}"));
        return;
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if s("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{path}: shorter than minLength"));
        }
        if s("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{path}: longer than maxLength"));
        }
        if let Some(p) = s("pattern").and_then(Value::as_str) {
            match crd_pattern(p, text) {
                Some(true) => {}
                Some(false) => errs.push(format!("{path}: \"{text}\" does not match {p}")),
                None => errs.push(format!(
                    "{path}: no matcher for the pattern {p}: add one to crd_pattern()"
                )),
            }
        }
    }
    if let Some(n) = v.as_i64() {
        if s("minimum").and_then(Value::as_i64).is_some_and(|m| n < m)
            || s("maximum").and_then(Value::as_i64).is_some_and(|m| n > m)
            || s("format") == Some(&Value::from("int32")) && i32::try_from(n).is_err()
        {
            errs.push(format!("{path}: {n} out of bounds"));
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            if let Some(sub) = s("items") {
                crd_errors(sub, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
    if let Some(map) = v.as_object() {
        for req in s("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(req.as_str().unwrap()) {
                errs.push(format!("{path}: {req} is required"));
            }
        }
        // The root's metadata is ObjectMeta, which the apiserver checks itself.
        if path == ".metadata" {
            return;
        }
        let preserve = s("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        for (k, val) in map {
            let at = format!("{path}.{k}");
            match (
                s("properties").and_then(|p| p.get(k)),
                s("additionalProperties"),
            ) {
                (Some(sub), _) => crd_errors(sub, val, &at, errs),
                (None, Some(sub)) if sub.is_object() => crd_errors(sub, val, &at, errs),
                _ if preserve => {}
                _ => errs.push(format!(
                    "{at}: unknown field (the apiserver would prune it)"
                )),
            }
        }
    }
}

/// The CEL rules of the CRDs met on the checked objects, as Rust (`None`: not known here).
fn cel(rule: &str, v: &serde_json::Value) -> Option<bool> {
    match rule {
        // Cluster .spec (clusters CRD): an image, or an image catalog, not both.
        "!(has(self.imageCatalogRef) && has(self.imageName))" => {
            Some(!(v.get("imageCatalogRef").is_some() && v.get("imageName").is_some()))
        }
        // Cluster .spec.imageCatalogRef.
        "self.kind == 'ImageCatalog' || self.kind == 'ClusterImageCatalog'" => {
            Some(v["kind"] == "ImageCatalog" || v["kind"] == "ClusterImageCatalog")
        }
        "self.apiGroup == 'postgresql.cnpg.io'" => Some(v["apiGroup"] == "postgresql.cnpg.io"),
        _ => None,
    }
}

/// The `pattern`s of the CRDs met on the checked objects, as Rust (`None`: not known here).
fn crd_pattern(pattern: &str, text: &str) -> Option<bool> {
    match pattern {
        // Cluster .spec.backup.retentionPolicy: a count and d, w or m.
        "^[1-9][0-9]*[dwm]$" => {
            let (n, unit) = text.split_at(text.len().saturating_sub(1));
            Some(
                n.starts_with(|c: char| ('1'..='9').contains(&c))
                    && n.chars().all(|c| c.is_ascii_digit())
                    && matches!(unit, "d" | "w" | "m"),
            )
        }
        _ => None,
    }
}

/// The `openAPIV3Schema` of a recorded CRD fixture's version `v1`.
fn crd_schema(fixture: &str) -> serde_json::Value {
    let crd = crate::testdata::json(fixture);
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("{fixture}: no v1"))
}

/// Errors of `obj` against the CloudNativePG CRD of its kind, from the pinned chart
/// (cloudnative-pg 0.29.0, operator 1.30.0; tests/fixtures/upstream/cnpg-crd-*).
fn cnpg_errors(obj: &serde_json::Value) -> Vec<String> {
    assert_eq!(obj["apiVersion"], "postgresql.cnpg.io/v1", "{obj}");
    let fixture = match obj["kind"].as_str() {
        Some("Cluster") => "cnpg-crd-clusters-chart-v0.29.0.yaml",
        Some("ScheduledBackup") => "cnpg-crd-scheduledbackups-chart-v0.29.0.yaml",
        k => panic!("no recorded CRD for {k:?}"),
    };
    let mut errs = Vec::new();
    crd_errors(&crd_schema(fixture), obj, "", &mut errs);
    errs
}

/// A `ScheduledBackup` schedule as the operator reads it: robfig/cron v1.2.0's `Parse`
/// (`Second | Minute | Hour | Dom | Month | DowOptional`, parser.go:174-175), which takes five
/// fields too, seconds first, so the webhook only warns on them
/// (internal/webhook/v1/scheduledbackup_webhook.go:138-148); here anything but six fields of
/// numbers, `*`, ranges, steps and lists within each field's bounds is an error. The fields.
fn cnpg_schedule(schedule: &str) -> Result<Vec<String>, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "\"{schedule}\" has {} fields, not six (seconds first)",
            fields.len()
        ));
    }
    let bounds = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
    for (f, (lo, hi)) in fields.iter().zip(bounds) {
        for part in f.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, "1"));
            let num = |t: &str| {
                t.parse::<u32>()
                    .map_err(|_| format!("{t} in \"{schedule}\""))
            };
            let (a, b) = match range {
                "*" | "?" => (lo, hi),
                r => match r.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => (num(r)?, num(r)?),
                },
            };
            if num(step)? == 0 || a < lo || b > hi || a > b {
                return Err(format!("{part} out of {lo}-{hi} in \"{schedule}\""));
            }
        }
    }
    Ok(fields.iter().map(|f| f.to_string()).collect())
}

/// The README's recovery example ("Database backups and point-in-time recovery"), with the
/// values platform.toml ships: a new Cluster bootstrapped from `pg`'s object store up to a
/// time (CloudNativePG 1.30.0 docs/src/appendixes/backup_barmanobjectstore.md, "Recovery from
/// an object store", and docs/src/recovery.md, "PITR from an object store"). Kept in step
/// with the README by hand.
const PITR_EXAMPLE: &str = r#"
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: pg-pitr
  namespace: infra
spec:
  instances: 1
  storage:
    storageClass: longhorn-retain
    size: 20Gi
  affinity:
    nodeSelector:
      node.role: database
  bootstrap:
    recovery:
      source: pg-archive
      recoveryTarget:
        targetTime: "2026-07-01T09:30:00Z"
  externalClusters:
    - name: pg-archive
      barmanObjectStore:
        destinationPath: s3://dirtbikechina-cluster-backups/postgres
        endpointURL: https://s3.us-east-1.amazonaws.com
        serverName: pg
        s3Credentials:
          accessKeyId:
            name: pg-backup-s3-credentials
            key: ACCESS_KEY_ID
          secretAccessKey:
            name: pg-backup-s3-credentials
            key: ACCESS_SECRET_KEY
          region:
            name: pg-backup-s3-credentials
            key: REGION
        wal:
          maxParallel: 4
"#;

/// Issue 28: platform.toml's CloudNativePG objects (the Cluster with its WAL archive and base
/// backups, the daily ScheduledBackup) and the README's recovery Cluster are valid for the CRDs
/// of the pinned chart, and fit together: the backups go where the variables say, with the
/// credentials of the SealedSecret beside them, every day, kept 30 days. The check itself
/// refuses a misspelt field, a bad pattern or enum, a missing required field and a five-field
/// schedule.
#[test]
fn platform_cnpg_objects_match_the_pinned_crds() {
    let inv = platform_sealed();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let files = spec.files(Some(&fake_key())).unwrap();
    let docs = |file: &str| -> Vec<serde_json::Value> {
        let f = files.iter().find(|f| f.file == file).unwrap();
        yaml_docs(&f.content)
            .iter()
            .map(|d| serde_json::to_value(d).unwrap())
            .collect()
    };
    let pg = docs("postgres.yaml");
    let kinds: Vec<&str> = pg.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Cluster", "ScheduledBackup"]);
    let pitr = serde_json::to_value(yaml_docs(PITR_EXAMPLE).remove(0)).unwrap();
    for obj in pg.iter().chain([&pitr]) {
        let errs = cnpg_errors(obj);
        assert!(errs.is_empty(), "{}: {errs:#?}", obj["metadata"]["name"]);
    }
    let (cluster, scheduled) = (&pg[0], &pg[1]);
    let var = |n: &str| inv.variables[n].clone();

    // Where the backups go, and with what (the webhook: exactly one kind of credentials, both
    // S3 keys; barman-cloud v0.5.1 pkg/api/webhooks/config.go:27-70, config.go:385-405).
    let store = &cluster["spec"]["backup"]["barmanObjectStore"];
    assert_eq!(
        store["destinationPath"],
        format!("s3://{}/{}", var("pg_backup_bucket"), var("pg_backup_path"))
    );
    assert_eq!(store["endpointURL"], var("pg_backup_endpoint_url"));
    assert!(store["endpointURL"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    for other in ["azureCredentials", "googleCredentials"] {
        assert!(store.get(other).is_none(), "{other}");
    }
    let creds = &store["s3Credentials"];
    assert!(creds.get("inheritFromIAMRole").is_none());
    assert_eq!(cluster["spec"]["backup"]["retentionPolicy"], "30d");
    assert_eq!(store["wal"]["compression"], "gzip");

    // Every key the Cluster names is in the SealedSecret of its namespace and name.
    let sealed = docs("postgres-backup-credentials.yaml").remove(0);
    assert_eq!(sealed["kind"], "SealedSecret");
    assert_eq!(
        sealed["metadata"]["namespace"],
        cluster["metadata"]["namespace"]
    );
    assert_eq!(
        sealed["spec"]["template"]["metadata"]["name"],
        sealed["metadata"]["name"]
    );
    let plain = &sealed["spec"]["template"]["data"];
    assert_eq!(plain["REGION"], var("pg_backup_region"));
    for (field, key) in [
        ("accessKeyId", "ACCESS_KEY_ID"),
        ("secretAccessKey", "ACCESS_SECRET_KEY"),
        ("region", "REGION"),
    ] {
        assert_eq!(creds[field]["name"], sealed["metadata"]["name"], "{field}");
        assert_eq!(creds[field]["key"], key, "{field}");
        let in_secret =
            sealed["spec"]["encryptedData"].get(key).is_some() || plain.get(key).is_some();
        assert!(in_secret, "{key} is not in the SealedSecret");
    }
    assert!(plain.get("ACCESS_KEY_ID").is_none() && plain.get("ACCESS_SECRET_KEY").is_none());

    // The ScheduledBackup: pg's, in its namespace, by barmanObjectStore (so no `online`
    // settings, webhook :151-174), daily at a fixed time, the first at once.
    assert_eq!(
        scheduled["spec"]["cluster"]["name"],
        cluster["metadata"]["name"]
    );
    assert_eq!(
        scheduled["metadata"]["namespace"],
        cluster["metadata"]["namespace"]
    );
    assert_eq!(scheduled["spec"]["method"], "barmanObjectStore");
    assert!(scheduled["spec"].get("online").is_none());
    assert!(scheduled["spec"].get("onlineConfiguration").is_none());
    assert_eq!(scheduled["spec"]["immediate"], true);
    let f = cnpg_schedule(scheduled["spec"]["schedule"].as_str().unwrap()).unwrap();
    assert!(
        f[..3].iter().all(|x| x.parse::<u32>().is_ok()) && f[3..] == ["*", "*", "*"],
        "not once a day: {f:?}"
    );

    // The recovery example reads pg's archive with pg's credentials.
    let origin = &pitr["spec"]["externalClusters"][0];
    assert_eq!(
        pitr["spec"]["bootstrap"]["recovery"]["source"],
        origin["name"]
    );
    let from = &origin["barmanObjectStore"];
    assert_eq!(from["serverName"], cluster["metadata"]["name"]);
    for k in ["destinationPath", "endpointURL", "s3Credentials"] {
        assert_eq!(from[k], store[k], "{k}");
    }
    assert_eq!(pitr["spec"]["storage"], cluster["spec"]["storage"]);

    // The check is no formality.
    let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = cluster.clone();
        edit(&mut c);
        cnpg_errors(&c).join("\n")
    };
    let e = broken(&|c| {
        let b = c["spec"]["backup"].as_object_mut().unwrap();
        let r = b.remove("retentionPolicy").unwrap();
        b.insert("retention".into(), r);
    });
    assert!(e.contains(".spec.backup.retention: unknown field"), "{e}");
    let e = broken(&|c| c["spec"]["backup"]["retentionPolicy"] = "30 days".into());
    assert!(e.contains("does not match ^[1-9][0-9]*[dwm]$"), "{e}");
    let e =
        broken(&|c| c["spec"]["backup"]["barmanObjectStore"]["wal"]["compression"] = "zip".into());
    assert!(
        e.contains(".spec.backup.barmanObjectStore.wal.compression: \"zip\" is not one of"),
        "{e}"
    );
    let e = broken(&|c| {
        c["spec"]["backup"]["barmanObjectStore"]
            .as_object_mut()
            .unwrap()
            .remove("destinationPath");
    });
    assert!(e.contains("\"destinationPath\" is required"), "{e}");
    let e = broken(&|c| {
        c["spec"]["imageName"] = "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie".into()
    });
    assert!(e.is_empty(), "{e}");
    let e = broken(&|c| {
        c["spec"]["imageName"] = "x".into();
        c["spec"]["imageCatalogRef"] = serde_json::json!({"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "c", "major": 18});
    });
    assert_eq!(
        e, ".spec: \"imageName and imageCatalogRef are mutually exclusive\"",
        "{e}"
    );
    let mut s = scheduled.clone();
    s["spec"]["schedule"] = "0 4 * * *".into();
    assert!(cnpg_errors(&s).is_empty(), "the CRD takes any string");
    assert!(cnpg_schedule("0 4 * * *").unwrap_err().contains("not six"));
    assert!(cnpg_schedule("0 0 24 * * *").is_err());
}

#[test]
fn an_oci_chart_names_its_registry_in_chart_and_has_no_repo() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[cluster]\nname = \"t\"\n\n[[charts]]\nname = \"cnpg\"\nrepo = \"oci://ghcr.io/cloudnative-pg/charts\"\nchart = \"cloudnative-pg\"\nversion = \"0.29.0\"\nnamespace = \"cnpg-system\"\ntimeout = \"90s\"\nfailure_policy = \"abort\"\nnode_selector = { \"node.role\" = \"database\" }\ntolerations = [\"dedicated:NoSchedule\"]\nvalues = { replicaCount = 2 }\n\n[[node]]\nname = \"m\"\nhost = \"10.0.0.1\"\nrole = \"server\"\n";
    std::fs::write(dir.path().join("i.toml"), text).unwrap();
    let inv = Inventory::load(dir.path().join("i.toml")).unwrap();
    let spec = AddonsSpec::from_inventory(&inv).unwrap();
    let f = spec.charts[0].file().unwrap();
    let doc = &yaml_docs(&f.content)[0];
    assert_eq!(
        doc["spec"]["chart"],
        "oci://ghcr.io/cloudnative-pg/charts/cloudnative-pg"
    );
    assert!(doc["spec"].get("repo").is_none(), "{}", f.content);
    assert_eq!(doc["spec"]["timeout"], "90s");
    assert_eq!(doc["spec"]["failurePolicy"], "abort");
    let values: serde_yaml::Value =
        serde_yaml::from_str(doc["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(values["replicaCount"], 2);
    assert_eq!(values["nodeSelector"]["node.role"], "database");
    assert_eq!(values["tolerations"][0]["operator"], "Exists");
    assert_eq!(values["tolerations"][0]["key"], "dedicated");
    let rel = spec.charts[0].release();
    assert_eq!(
        (rel.name.as_str(), rel.namespace.as_str()),
        ("cnpg", "cnpg-system")
    );
    assert_eq!(rel.to_string(), "chart cnpg");
}

#[test]
fn a_values_file_that_sets_the_entrys_placement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[cluster]\nname = \"t\"\n\n[[charts]]\nname = \"app\"\nrepo = \"https://charts.example.com\"\nchart = \"app\"\nversion = \"1.0.0\"\nnamespace = \"apps\"\nvalues_file = \"app.yaml\"\nnode_selector = { \"node.role\" = \"database\" }\n\n[[node]]\nname = \"m\"\nhost = \"10.0.0.1\"\nrole = \"server\"\n";
    std::fs::write(dir.path().join("i.toml"), text).unwrap();
    let file = "nodeSelector:\n  disk: ssd\n";
    std::fs::write(dir.path().join("app.yaml"), file).unwrap();
    let inv = Inventory::load(dir.path().join("i.toml")).unwrap();
    let e = super::charts::values(&inv.charts[0], Some(file), &inv).unwrap_err();
    assert!(
        e.to_string().contains(
            "chart app: the values_file sets nodeSelector and so do the entry's placement keys"
        ),
        "{e}"
    );
    let ok = super::charts::values(&inv.charts[0], Some("replicaCount: 2\n"), &inv).unwrap();
    assert_eq!(ok["nodeSelector"]["node.role"], "database");
}

/// The release table line `kubectl get secrets -A --show-labels --no-headers` prints for a
/// release Secret: `-A` puts the namespace first (kubectl's printer), the labels last.
fn release_line(secret: &serde_json::Value) -> String {
    let labels: Vec<String> = secret["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    format!(
        "{}   {}   helm.sh/release.v1   1   5m   {}",
        secret["metadata"]["namespace"].as_str().unwrap(),
        secret["metadata"]["name"].as_str().unwrap(),
        labels.join(",")
    )
}

/// Issue 26 (A, B4): health judged on helm-controller's objects as it writes them. The Job
/// is helm-controller v0.17.7's own (built from chart.go with file:line, no recording with
/// CONFIG_HASH exists yet), run to completion as the Job controller marks it; the release
/// Secret is klipper-helm's with Helm's labels. The hash is read from the pod template, never
/// from the Job's own metadata, where a recorded Job of an earlier helm-controller shows none
/// either.
#[test]
fn health_on_helm_controllers_objects_as_upstream_writes_them() {
    use crate::testdata;
    use health::{evaluate, Snapshot};
    let mut job = testdata::json("helm-install-job-built-helm-controller-v0.17.7.yaml");
    assert!(job["metadata"].get("annotations").is_none());
    let recorded = testdata::json("helm-install-job.yaml");
    assert!(recorded["metadata"]["annotations"]
        .get("helmcharts.helm.cattle.io/configHash")
        .is_none());
    assert!(recorded["spec"]["template"]["metadata"]["annotations"]
        .get("helmcharts.helm.cattle.io/configHash")
        .is_some());
    job["status"] =
        serde_json::json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    let chart = serde_json::json!({"kind": "HelmChart", "apiVersion": "helm.cattle.io/v1",
        "metadata": {"name": "traefik", "namespace": "kube-system"},
        "spec": {"chart": "https://%{KUBERNETES_API}%/static/charts/traefik-40.1.4+up40.1.0.tgz", "failurePolicy": "retry"}});
    let release = testdata::json("helm-release-secret-built-k3s.yaml");
    let rel = HelmRelease {
        name: "traefik".into(),
        namespace: "kube-system".into(),
        addon: None,
        failure_policy: "retry".into(),
        timeout: None,
        wants: vec![],
        values_digest: None,
    };
    let text = |job: &serde_json::Value| {
        health_text(
            &serde_json::json!({"items": [chart, job]}).to_string(),
            "",
            r#"{"items": []}"#,
        )
        .replace(
            "#bootstrap-releases\n\n",
            &format!("#bootstrap-releases\n{}\n", release_line(&release)),
        )
    };
    let h = evaluate(&Snapshot::parse(&text(&job)).unwrap(), &rel);
    assert!(h.healthy(), "{}", h.summary());
    // The hash only on the Job's own metadata (where the double once put it): no match.
    let mut misplaced = testdata::hash_on_job_metadata(&job);
    for e in misplaced["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
    {
        if e["name"] == "CONFIG_HASH" {
            e["value"] = serde_json::Value::from("0000");
        }
    }
    let h = evaluate(&Snapshot::parse(&text(&misplaced)).unwrap(), &rel);
    assert!(!h.healthy() && !h.release_current, "{}", h.summary());
    // The recorded Job of an earlier helm-controller (no CONFIG_HASH), with its HelmChart:
    // the chart's recorded conditions are not a failure; the Job has not completed.
    let chart = testdata::json("helmchart-jobcreated-rke2-v1.35.yaml");
    let rel = HelmRelease {
        name: "harvester-cloud-provider".into(),
        ..rel.clone()
    };
    let s = Snapshot::parse(&health_text(
        &serde_json::json!({"items": [chart, recorded]}).to_string(),
        "",
        r#"{"items": []}"#,
    ))
    .unwrap();
    let h = evaluate(&s, &rel);
    assert!(h.chart_failed.is_none() && h.chart_note.is_none());
    assert_eq!(h.job, health::JobState::Running);
    assert!(!h.healthy());
}

/// The release records as `kubectl get secrets --show-labels` printed them on a real
/// cluster: only helm's release Secret is one.
#[test]
fn release_records_read_from_a_recorded_table() {
    use health::Snapshot;
    let table = crate::testdata::text("helm-release-secret-show-labels.txt");
    let rows: Vec<String> = table
        .lines()
        .skip(2)
        .map(|l| format!("default   {l}"))
        .collect();
    let s = Snapshot::parse(&format!("#bootstrap-releases\n{}\n", rows.join("\n"))).unwrap();
    let r = s.latest_release("default", "thayward-konk").unwrap();
    assert_eq!((r.revision, r.status.as_str()), (1, "deployed"));
    assert_eq!(s.releases_named("thayward-konk").len(), 1);
}

/// A helm-install pod recorded after its attempt succeeded is no failed attempt; the
/// termination message klipper-helm wrote is still there.
#[test]
fn a_completed_helm_pod_as_recorded_is_no_failure() {
    use health::{evaluate, Snapshot};
    let pod = crate::testdata::json("helm-install-pod-completed-k3s-v1.29.json");
    let uid = pod["metadata"]["ownerReferences"][0]["uid"].clone();
    let job = serde_json::json!({"kind": "Job", "apiVersion": "batch/v1",
        "metadata": {"name": "helm-install-traefik-crd", "namespace": "kube-system", "uid": uid},
        "spec": {"template": {"spec": {"containers": [{"env": []}]}}}, "status": {"active": 1}});
    let chart = serde_json::json!({"kind": "HelmChart", "apiVersion": "helm.cattle.io/v1",
        "metadata": {"name": "traefik-crd", "namespace": "kube-system"}, "spec": {}});
    let mut p = pod.clone();
    p["kind"] = serde_json::Value::from("Pod");
    let s = Snapshot::parse(&health_text(
        &serde_json::json!({"items": [chart, job]}).to_string(),
        "",
        &serde_json::json!({"items": [p]}).to_string(),
    ))
    .unwrap();
    let rel = HelmRelease {
        name: "traefik-crd".into(),
        namespace: "kube-system".into(),
        addon: None,
        failure_policy: "reinstall".into(),
        timeout: None,
        wants: vec![],
        values_digest: None,
    };
    let h = evaluate(&s, &rel);
    assert!(h.failed_attempt.is_none(), "{:?}", h.failed_attempt);
}

/// Issue 26 (B5): "rolled out" as `kubectl rollout status` means it, on workloads recorded
/// from real clusters: a Deployment whose new ReplicaSet's pod is not ready while the old one
/// keeps it Available, one whose only replica is updated but unavailable, a DaemonSet with a
/// pod unavailable, are not rolled out; the complete ones are.
#[test]
fn rollouts_as_recorded_are_judged_as_kubectl_rollout_status_does() {
    use crate::testdata;
    use health::workload_problem;
    let stuck = testdata::json("deployment-rollout-stuck.yaml");
    let p = workload_problem("Deployment", &stuck).expect("not rolled out");
    assert!(p.contains("old replicas pending termination"), "{p}");
    assert_eq!(
        workload_problem(
            "Deployment",
            &testdata::json("deployment-rollout-complete.json")
        ),
        None
    );
    // Recorded as status only; the spec it had (one replica) from the same thread.
    let mut d = testdata::json("deployment-status-available-true-with-unavailable.json");
    d["spec"] = serde_json::json!({"replicas": 1});
    let p = workload_problem("Deployment", &d).expect("unavailable");
    assert!(p.contains("0 of 1 updated replicas available"), "{p}");
    let mut ds = testdata::json("daemonset-status-rollout-stuck.yaml");
    ds["metadata"] = serde_json::json!({"generation": 12});
    let p = workload_problem("DaemonSet", &ds).expect("unavailable");
    assert!(p.contains("1 of 2 updated pods available"), "{p}");
    let mut ds = testdata::json("daemonset-status-complete.yaml");
    ds["metadata"] = serde_json::json!({"generation": 1});
    assert_eq!(workload_problem("DaemonSet", &ds), None);
    ds["metadata"]["generation"] = serde_json::Value::from(2);
    assert!(workload_problem("DaemonSet", &ds)
        .unwrap()
        .contains("not observed"));
    let mut sts = testdata::json("statefulset-status-no-updatedreplicas.json");
    sts["spec"] = serde_json::json!({"replicas": 1});
    sts["metadata"] = serde_json::json!({"generation": 1});
    // No partition: judged by revisions (current = update: complete).
    assert_eq!(workload_problem("StatefulSet", &sts), None);
    // With the apiserver's default partition 0, `updatedReplicas` (absent here) counts.
    sts["spec"]["updateStrategy"] =
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
    assert!(workload_problem("StatefulSet", &sts)
        .unwrap()
        .contains("0 of 1 new pods updated"));
}

/// Issue 26 (B5, B9): an upgrade whose new pods crash while the old pod stays Ready is not
/// healthy, and the report names the workload and the pods' reason; a transient `Failed`
/// condition ("Job create failed", cleared by helm-controller's next pass, chart.go:376-390)
/// is shown but is not a reason to stop, while "used up its retries" is.
#[test]
fn a_rollout_with_crashing_pods_is_named_and_a_transient_failed_condition_is_not_stuck() {
    use health::{evaluate, Snapshot};
    let objects = r#"{"items": [
        {"kind": "HelmChart", "metadata": {"name": "sealed-secrets", "namespace": "kube-system"},
         "spec": {"version": "2.19.1"},
         "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "Job create failed", "message": "Failed to generate Job: configmaps \"chart-content-x\" is forbidden"}]}},
        {"kind": "Job", "metadata": {"name": "helm-install-sealed-secrets", "namespace": "kube-system", "uid": "j1"},
         "spec": {"template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": "SHA256=ABC"}},
           "spec": {"containers": [{"env": [{"name": "VERSION", "value": "2.19.1"}, {"name": "CONFIG_HASH", "value": "ABC"}]}]}}},
         "status": {"succeeded": 1}},
        {"kind": "CustomResourceDefinition", "metadata": {"name": "sealedsecrets.bitnami.com"}},
        {"kind": "Service", "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system"}},
        {"kind": "Deployment", "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system", "generation": 2},
         "spec": {"replicas": 1},
         "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1}}]}"#;
    let pods = "kube-system\tsealed-secrets-controller-7d9f-abcde\tReplicaSet/sealed-secrets-controller-7d9f\tRunning\tcontroller:true::0 \n\
                kube-system\tsealed-secrets-controller-5c4b-fghij\tReplicaSet/sealed-secrets-controller-5c4b\tRunning\tcontroller:false:CrashLoopBackOff:4 \n";
    let text = format!(
        "{}#bootstrap-pods\n{pods}",
        health_text(
            objects,
            "kube-system sealed-secrets 1 deployed ABC",
            r#"{"items": []}"#
        )
    );
    let h = evaluate(
        &Snapshot::parse(&text).unwrap(),
        &AddonKind::SealedSecrets.release(""),
    );
    assert!(!h.healthy());
    assert!(!h.stuck(), "a transient Failed condition is not stuck");
    assert!(h.chart_failed.is_none());
    let sum = h.summary();
    assert!(sum.contains("it tries again by itself"), "{sum}");
    assert!(
        sum.contains("Deployment kube-system/sealed-secrets-controller not ready (1 old replicas pending termination): pod sealed-secrets-controller-5c4b-fghij: CrashLoopBackOff (4 restarts)"),
        "{sum}"
    );
    assert!(
        !sum.contains("7d9f-abcde"),
        "the old, ready pod is not named: {sum}"
    );
    // The retries used up: stuck.
    let used_up = text.replace(
        r#""reason": "Job create failed", "message": "Failed to generate Job: configmaps \"chart-content-x\" is forbidden""#,
        r#""reason": "Job failed", "message": "Job has reached configured number of retries without succeeding""#,
    );
    let h = evaluate(
        &Snapshot::parse(&used_up).unwrap(),
        &AddonKind::SealedSecrets.release(""),
    );
    assert!(h.stuck() && h.chart_failed.is_some());
}

/// Issue 26 (B9): the health read gets CRDs as names and their `Established` condition, not
/// whole (with the platform installed they are ~10 MB of JSON), and reads the values Secrets
/// before the Jobs.
#[test]
fn the_health_read_is_small_and_in_order() {
    let cmd = health::get_all(&[]);
    assert!(!health::KINDS.contains("customresourcedefinitions"));
    assert!(cmd.contains(health::GET_CRDS));
    let values = cmd.find("#bootstrap-values").unwrap();
    let objects = cmd.find("#bootstrap-objects").unwrap();
    assert!(values < objects, "{cmd}");
    assert!(
        !cmd.contains("get secrets -A -l owner=helm --field-selector type=helm.sh/release.v1 -o")
    );
}

/// Issue 26 (B9): a `wait_for` names its Kind's group, and a Kind of the same name in another
/// group does not stand in for it.
#[test]
fn wait_for_keeps_the_group() {
    use health::{evaluate, Snapshot, Want};
    let rel = HelmRelease {
        name: "pg".into(),
        namespace: "infra".into(),
        addon: None,
        failure_policy: "reinstall".into(),
        timeout: None,
        wants: vec![Want {
            kind: "Cluster".into(),
            namespace: "infra".into(),
            group: Some("postgresql.cnpg.io".into()),
            name: "pg".into(),
            prefix: false,
        }],
        values_digest: None,
    };
    let other = r#"{"items": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "metadata": {"name": "pg", "namespace": "infra"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]}"#;
    let h = evaluate(&Snapshot::parse(other).unwrap(), &rel);
    assert!(
        h.problems
            .iter()
            .any(|p| p == "Cluster.postgresql.cnpg.io infra/pg missing"),
        "{:?}",
        h.problems
    );
    let ours = other.replace("cluster.x-k8s.io/v1beta1", "postgresql.cnpg.io/v1");
    let h = evaluate(&Snapshot::parse(&ours).unwrap(), &rel);
    assert!(h.problems.is_empty(), "{:?}", h.problems);
}
