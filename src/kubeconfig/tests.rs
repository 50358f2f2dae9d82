use super::*;
use crate::testdata::k3s_kubeconfig;

fn pins() -> Pins<'static> {
    let k = k3s_kubeconfig();
    Pins {
        ca_hash: Some(&k.ca_hash),
        client_ca: Some(k.client_ca.as_bytes()),
    }
}

/// k3s's file with `edit` applied to its YAML.
fn poisoned(edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_yaml::from_str(&k3s_kubeconfig().text).unwrap();
    edit(&mut v);
    serde_yaml::to_string(&v).unwrap()
}

fn refused(text: &str) -> String {
    match credentials(text, &pins()) {
        Err(e @ KubeconfigError::Refused(_)) => e.to_string(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn built_from_the_three_values_with_the_address_and_names() {
    let k = k3s_kubeconfig();
    let out = rewrite(
        &k.text,
        &pins(),
        "dirtbikechina",
        "https://k8s.example.com:6443",
    )
    .unwrap();
    let v: Value = serde_yaml::from_str(&out).unwrap();
    let src: Value = serde_yaml::from_str(&k.text).unwrap();
    assert_eq!(
        v["clusters"][0]["cluster"]["server"],
        "https://k8s.example.com:6443"
    );
    assert_eq!(
        v["clusters"][0]["cluster"]["certificate-authority-data"],
        src["clusters"][0]["cluster"]["certificate-authority-data"]
    );
    assert_eq!(
        v["users"][0]["user"]["client-key-data"],
        src["users"][0]["user"]["client-key-data"]
    );
    assert_eq!(v["clusters"][0]["name"], "dirtbikechina");
    assert_eq!(v["users"][0]["name"], "dirtbikechina");
    assert_eq!(v["contexts"][0]["context"]["user"], "dirtbikechina");
    assert_eq!(v["current-context"], "dirtbikechina");
    assert!(!out.contains("127.0.0.1"));
    // What a kubeconfig reader sees: the same three values, nothing else.
    let keys = |v: &Value, p: &str| -> Vec<String> {
        let mut k: Vec<String> = v[p]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v["clusters"][0], "cluster"),
        ["certificate-authority-data", "server"]
    );
    assert_eq!(
        keys(&v["users"][0], "user"),
        ["client-certificate-data", "client-key-data"]
    );
}

/// Security review 3, H1: whatever a root on the server adds to k3s.yaml is refused, named.
#[test]
fn anything_k3s_does_not_write_is_refused() {
    let exec = poisoned(|v| {
        v["users"][0]["user"]["exec"] = serde_yaml::from_str(
            "{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, id]}",
        )
        .unwrap();
    });
    assert!(refused(&exec).contains("`users[0].user.exec`"));
    let proxy = poisoned(|v| v["clusters"][0]["cluster"]["proxy-url"] = "http://evil:3128".into());
    assert!(refused(&proxy).contains("`clusters[0].cluster.proxy-url`"));
    let insecure =
        poisoned(|v| v["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = true.into());
    assert!(refused(&insecure).contains("insecure-skip-tls-verify"));
    let token = poisoned(|v| v["users"][0]["user"]["token"] = "t".into());
    assert!(refused(&token).contains("`users[0].user.token`"));
    let prod = poisoned(|v| {
        let mut extra = v["clusters"][0].clone();
        extra["name"] = "prod".into();
        extra["cluster"]["server"] = "https://127.0.0.66:6443".into();
        v["clusters"].as_sequence_mut().unwrap().push(extra);
    });
    assert!(refused(&prod).contains("has 2 `clusters`, not one"));
    let ctx = poisoned(|v| v["contexts"][0]["context"]["namespace"] = "x".into());
    assert!(refused(&ctx).contains("`contexts[0].context.namespace`"));
    let top = poisoned(|v| v["extensions"] = Value::Sequence(vec![]));
    assert!(refused(&top).contains("`extensions`"));
    let msg = refused(&exec);
    assert!(msg.contains("which k3s never writes"), "{msg}");
}

#[test]
fn values_must_be_the_clusters_pem() {
    let k = k3s_kubeconfig();
    let not_pem = poisoned(|v| v["users"][0]["user"]["client-key-data"] = "S0VZ".into());
    assert!(refused(&not_pem).contains("`client-key-data` that is not PEM"));
    let not_b64 =
        poisoned(|v| v["clusters"][0]["cluster"]["certificate-authority-data"] = "%%".into());
    assert!(refused(&not_b64).contains("not base64"));
    // Another CA than the tokens pin.
    let other = Pins {
        ca_hash: Some("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        client_ca: None,
    };
    let e = credentials(&k.text, &other).unwrap_err().to_string();
    assert!(
        e.contains("other than the one the cluster's tokens pin"),
        "{e}"
    );
    // An admin certificate the client CA did not sign (signed by the server CA's stand-in).
    let other = Pins {
        ca_hash: None,
        client_ca: Some(k.server_ca.as_bytes()),
    };
    let e = credentials(&k.text, &other).unwrap_err().to_string();
    assert!(e.contains("the cluster's client CA did not sign"), "{e}");
    // Nothing pinned yet (a first run): the shape and PEM checks still hold.
    assert!(credentials(&k.text, &Pins::default()).is_ok());
}

#[test]
fn merge_replaces_same_names_and_keeps_others() {
    let k = k3s_kubeconfig();
    let a = rewrite(&k.text, &pins(), "a", "https://1.1.1.1:6443").unwrap();
    let b = rewrite(&k.text, &pins(), "b", "https://2.2.2.2:6443").unwrap();
    let merged = merge("", &a, "cfg").unwrap();
    let merged = merge(&merged, &b, "cfg").unwrap();
    let a2 = rewrite(&k.text, &pins(), "a", "https://3.3.3.3:6443").unwrap();
    let merged = merge(&merged, &a2, "cfg").unwrap();
    let v: Value = serde_yaml::from_str(&merged).unwrap();
    let clusters = v["clusters"].as_sequence().unwrap();
    assert_eq!(clusters.len(), 2);
    // The first merge set the context; b's merge kept it.
    assert_eq!(v["current-context"], "a");
    assert_eq!(current_context(&merged).as_deref(), Some("a"));
    assert!(has_context(&merged, "b") && !has_context(&merged, "c"));
    assert!(merged.contains("https://3.3.3.3:6443"));
    assert!(!merged.contains("https://1.1.1.1:6443"));
    assert!(merged.contains("https://2.2.2.2:6443"));
    // Only ever one of each from us.
    let two = merged.clone();
    assert!(merge("", &two, "cfg").is_err());
}

#[test]
fn bad_input_is_an_error() {
    assert!(rewrite("clusters: 3", &Pins::default(), "a", "https://x:6443").is_err());
    assert!(rewrite(": : :", &Pins::default(), "a", "https://x:6443").is_err());
    let ours = rewrite(&k3s_kubeconfig().text, &pins(), "a", "u").unwrap();
    assert!(merge("- not a map", &ours, "cfg").is_err());
}

/// The admin kubeconfig a real k3s wrote (tests/fixtures/upstream): taken whole, checked
/// against its own CA and client CA; the same file with an `exec` plugin, refused.
#[test]
fn a_recorded_k3s_yaml_is_taken() {
    use base64::Engine;
    let text = crate::testdata::text("k3s-yaml-eve-k3s-v1.28.yaml");
    let v: Value = serde_yaml::from_str(&text).unwrap();
    let b64 = |p: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(p.as_str().unwrap())
            .unwrap()
    };
    let server_ca = b64(&v["clusters"][0]["cluster"]["certificate-authority-data"]);
    let chain = String::from_utf8(b64(&v["users"][0]["user"]["client-certificate-data"])).unwrap();
    // k3s writes the admin leaf, then the client CA (the second certificate).
    let client_ca = &chain[chain[1..].find("-----BEGIN CERTIFICATE-----").unwrap() + 1..];
    let hash = hex::encode(Sha256::digest(&server_ca));
    let pins = Pins {
        ca_hash: Some(&hash),
        client_ca: Some(client_ca.as_bytes()),
    };
    let c = credentials(&text, &pins).unwrap();
    assert_eq!(
        Some(c.ca.as_str()),
        v["clusters"][0]["cluster"]["certificate-authority-data"].as_str()
    );
    // Its leaf against the server CA instead: not signed by it.
    let wrong = Pins {
        ca_hash: None,
        client_ca: Some(&server_ca),
    };
    assert!(credentials(&text, &wrong).is_err());
    let mut poisoned = v.clone();
    poisoned["users"][0]["user"]["exec"] =
        serde_yaml::from_str("{command: sh, args: [-c, id]}").unwrap();
    let e = credentials(&serde_yaml::to_string(&poisoned).unwrap(), &pins).unwrap_err();
    assert!(e.to_string().contains("`users[0].user.exec`"), "{e}");
}
