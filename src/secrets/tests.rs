use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use age::secrecy::SecretString;

use super::*;

const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBkeybytes\n-----END PRIVATE KEY-----\n";
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBcertbytes\n-----END CERTIFICATE-----\n";

fn tokens(server: &str, agent: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&TokenBackup {
        server: server.into(),
        agent: agent.into(),
    })
    .unwrap()
}

fn record(name: &str, token: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&Record {
        cluster: "lab".into(),
        name: name.into(),
        node: "m1".into(),
        path: format!("/var/lib/rancher/k3s/server/db/snapshots/{name}"),
        created: "2026-01-02T03:04:05Z".into(),
        size: 123,
        sha256: "ab".repeat(32),
        token_hash: "0123456789ab".into(),
        server_token: token.into(),
    })
    .unwrap()
}

fn archive() -> Archive {
    let mut files = BTreeMap::new();
    files.insert(
        TOKENS.to_string(),
        tokens("server-secret-pw", "agent-secret-pw"),
    );
    files.insert(SEALING_KEY.to_string(), KEY_PEM.as_bytes().to_vec());
    files.insert(SEALING_CERT.to_string(), CERT_PEM.as_bytes().to_vec());
    files.insert(
        "snapshots/on-demand-m1-1700000000.zip.json".to_string(),
        record("on-demand-m1-1700000000.zip", "server-secret-pw"),
    );
    Archive {
        cluster: "lab".into(),
        created: "2026-01-02T03:04:05Z".into(),
        files,
    }
}

fn pass(p: &str) -> SecretString {
    SecretString::from(p.to_string())
}

#[test]
fn the_paths_are_the_ones_the_tool_writes() {
    use crate::addons::sealed_secrets::SealingKey;
    let state = Path::new("/ops/.bootstrap");
    let rel = |p: &Path| p.strip_prefix(state).unwrap().to_str().unwrap().to_string();
    let inv = crate::inventory::Inventory::from_str_at(
        "[cluster]\nname = \"lab\"\n\n[[node]]\nname = \"m\"\nhost = \"192.0.2.1\"\nrole = \"server\"\n",
        Path::new("/ops/cluster.toml"),
    )
    .unwrap();
    assert_eq!(inv.state_dir(), state);
    assert_eq!(rel(&inv.token_backup_path()), TOKENS);
    let (crt, key) = SealingKey::backup_paths(state);
    assert_eq!(rel(&key), SEALING_KEY);
    assert_eq!(rel(&crt), SEALING_CERT);
    assert_eq!(rel(&RestoreRecord::path(state)), RESTORE);
    let copy = inv.snapshots_dir().join("on-demand-m-1.zip");
    assert_eq!(
        rel(&snapshot::record_path(&copy)),
        "snapshots/on-demand-m-1.zip.json"
    );
    assert_eq!(
        Kind::of(&rel(&snapshot::record_path(&copy))),
        Some(Kind::SnapshotRecord)
    );
}

#[test]
fn only_plain_paths_of_known_files_pass() {
    for (p, k) in [
        ("tokens.json", Kind::Tokens),
        ("sealed-secrets.key", Kind::SealingKey),
        ("sealed-secrets.crt", Kind::SealingCert),
        ("restore.json", Kind::RestoreRecord),
        ("snapshots/on-demand-m1-1.json", Kind::SnapshotRecord),
        ("snapshots/nightly_m1-1.zip.json", Kind::SnapshotRecord),
    ] {
        assert_eq!(check_path(p), Ok(k), "{p}");
    }
    for p in [
        "",
        "/etc/passwd",
        "/tokens.json",
        "../tokens.json",
        "./tokens.json",
        "snapshots/../tokens.json",
        "snapshots/../../etc/cron.d/x.json",
        "snapshots//x.json",
        "snapshots/.x.json",
        "snapshots/x",
        "snapshots/on-demand-m1-1",
        "snapshots/x.json.json",
        "snapshots/sub/x.json",
        "cache/v1.31.0+k3s1/k3s",
        "tokens.json/",
        "snapshots\\x.json",
        "tokens.json\n",
        "TOKENS.JSON",
        "other.json",
    ] {
        assert!(check_path(p).is_err(), "{p:?} passed");
    }
}

#[test]
fn an_archive_round_trips_and_is_versioned() {
    let a = archive();
    let bytes = a.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["version"], VERSION);
    assert_eq!(v["cluster"], "lab");
    assert!(v["files"]["tokens.json"].is_string());
    assert_eq!(Archive::parse(&bytes).unwrap(), a);
}

#[test]
fn a_bad_archive_is_refused_whole_without_quoting_it() {
    let good = String::from_utf8(archive().to_bytes()).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let with_files = |files: &str| {
        format!(
            r#"{{"format":"bootstrap-secrets","version":1,"cluster":"lab","created":"x","files":{{{files}}}}}"#
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not a bootstrap-secrets archive"),
        (
            r#"{"format":"other","version":1}"#.into(),
            "not a bootstrap-secrets archive",
        ),
        (
            good.replace("\"version\": 1", "\"version\": 2"),
            "newer bootstrap",
        ),
        (good.replace("\"version\": 1", "\"version\": 0"), "version"),
        (
            good.replace("\"cluster\"", "\"extra\": 1, \"cluster\""),
            "not of the expected shape",
        ),
        (
            with_files(&format!(
                r#""tokens.json":"{0}","tokens.json":"{0}""#,
                b64(&tokens("a", "b"))
            )),
            "comes twice",
        ),
        (
            with_files(r#""tokens.json":"!!not base64!!""#),
            "not base64",
        ),
        (
            with_files(&format!(r#""../tokens.json":"{}""#, b64(&tokens("a", "b")))),
            "not a plain path",
        ),
        (
            with_files(&format!(r#""/etc/shadow":"{}""#, b64(b"x"))),
            "absolute",
        ),
        (
            with_files(&format!(r#""cache/k3s":"{}""#, b64(b"x"))),
            "not a file an archive holds",
        ),
        (
            with_files(&format!(
                r#""tokens.json":"{}""#,
                b64(br#"{"server": "S3CRET-SERVER", "agent": ["S3CRET-AGENT"]}"#)
            )),
            "tokens.json: not a token backup",
        ),
        (
            with_files(&format!(r#""tokens.json":"{}""#, b64(&tokens("a", " ")))),
            "a token is empty",
        ),
        (
            with_files(&format!(
                r#""sealed-secrets.key":"{}""#,
                b64(KEY_PEM.as_bytes())
            )),
            "only one of",
        ),
        (
            with_files(&format!(
                r#""sealed-secrets.key":"{}","sealed-secrets.crt":"{}""#,
                b64(b"S3CRET-KEY"),
                b64(CERT_PEM.as_bytes())
            )),
            "not a PEM private key",
        ),
        (
            with_files(&format!(
                r#""snapshots/a-1.json":"{}""#,
                b64(&record("b-1", "S3CRET-SERVER"))
            )),
            "not \"a-1\"",
        ),
        (
            with_files(&format!(
                r#""restore.json":"{}""#,
                b64(b"{\"S3CRET-SERVER\": 1}")
            )),
            "not a restore record",
        ),
    ];
    for (text, want) in cases {
        let err = Archive::parse(text.as_bytes()).unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?} for {text}");
        assert!(!err.contains("S3CRET"), "{err}");
    }
}

#[test]
fn import_writes_the_new_skips_the_same_and_refuses_the_different() {
    let a = archive();
    let rec = "snapshots/on-demand-m1-1700000000.zip.json";
    // Into an empty `.bootstrap/`: all new.
    let plan = plan_import(&a, &BTreeMap::new(), "lab", false).unwrap();
    assert!(plan.iter().all(|e| e.change == Change::New), "{plan:?}");
    assert_eq!(plan.len(), 4);
    // Again: all the same, nothing to write.
    let plan = plan_import(&a, &a.files, "lab", false).unwrap();
    assert!(plan.iter().all(|e| e.change == Change::Same), "{plan:?}");
    // The same tokens written another way are the same.
    let mut here = a.files.clone();
    here.insert(
        TOKENS.into(),
        br#"{"server":"server-secret-pw","agent":"agent-secret-pw"}"#.to_vec(),
    );
    let plan = plan_import(&a, &here, "lab", false).unwrap();
    assert!(plan.iter().all(|e| e.change == Change::Same), "{plan:?}");

    // Another server token here: refused, naming the file and which token, never the value.
    let mut here = a.files.clone();
    here.insert(TOKENS.into(), tokens("other-server-pw", "agent-secret-pw"));
    here.insert(
        rec.into(),
        record("on-demand-m1-1700000000.zip", "other-server-pw"),
    );
    here.remove(SEALING_KEY);
    let refused = plan_import(&a, &here, "lab", false).unwrap_err();
    assert_eq!(
        refused.files,
        [
            (
                rec.to_string(),
                "the server token it records is another one".to_string()
            ),
            (
                TOKENS.to_string(),
                "its server token is another one".to_string()
            ),
        ]
    );
    let msg = refused.to_string();
    assert!(msg.contains("tokens.json differs"), "{msg}");
    assert!(!msg.contains("secret-pw"), "{msg}");
    // Forced: replaced, the missing key written, the rest the same.
    let plan = plan_import(&a, &here, "lab", true).unwrap();
    let change = |p: &str| plan.iter().find(|e| e.path == p).unwrap().change;
    assert_eq!(change(TOKENS), Change::Replace);
    assert_eq!(change(rec), Change::Replace);
    assert_eq!(change(SEALING_KEY), Change::New);
    assert_eq!(change(SEALING_CERT), Change::Same);

    // Another agent token, another sealing key.
    let mut here = a.files.clone();
    here.insert(TOKENS.into(), tokens("server-secret-pw", "x"));
    here.insert(
        SEALING_KEY.into(),
        b"-----BEGIN PRIVATE KEY-----\nother\n".to_vec(),
    );
    let refused = plan_import(&a, &here, "lab", false).unwrap_err();
    let msg = refused.to_string();
    assert!(msg.contains("its agent token is another one"), "{msg}");
    assert!(msg.contains("sealed-secrets.key differs"), "{msg}");

    // Another cluster's archive: refused unless forced.
    let refused = plan_import(&a, &BTreeMap::new(), "prod", false).unwrap_err();
    assert_eq!(refused.cluster, Some(("lab".into(), "prod".into())));
    assert!(plan_import(&a, &BTreeMap::new(), "prod", true).is_ok());
}

#[test]
fn collect_takes_the_secrets_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".bootstrap");
    assert_eq!(collect(&state).unwrap(), (BTreeMap::new(), vec![]));
    let a = archive();
    for (p, b) in &a.files {
        crate::local::write_private(&state.join(p), b).unwrap();
    }
    let snap = state.join("snapshots/on-demand-m1-1700000000.zip");
    std::fs::write(&snap, b"the etcd snapshot").unwrap();
    crate::local::write_private(&state.join("cache/v1/k3s"), b"binary").unwrap();
    std::fs::write(state.join(".tokens.json.0a1b.bootstrap-tmp"), b"x").unwrap();
    std::fs::write(state.join("notes.txt"), b"x").unwrap();
    let (files, left_out) = collect(&state).unwrap();
    assert_eq!(files, a.files);
    assert_eq!(
        left_out,
        [
            ".tokens.json.0a1b.bootstrap-tmp",
            "cache/",
            "notes.txt",
            "snapshots/on-demand-m1-1700000000.zip"
        ]
    );
    let (got, _) = archive_of(&state, "lab", "now").unwrap();
    assert_eq!((got.cluster.as_str(), got.files), ("lab", a.files));
    // A backup import would refuse is not exported either.
    std::fs::write(state.join(TOKENS), b"{\"server\": \"S3CRET\"}").unwrap();
    let err = archive_of(&state, "lab", "now").unwrap_err();
    assert!(err.contains("tokens.json: not a token backup"), "{err}");
    assert!(
        err.contains("import would refuse it") && !err.contains("S3CRET"),
        "{err}"
    );
}

#[test]
fn write_puts_back_private_files_and_current_refuses_links() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".bootstrap");
    let a = archive();
    assert_eq!(current(&state, &a).unwrap(), BTreeMap::new());
    let plan = plan_import(&a, &BTreeMap::new(), "lab", false).unwrap();
    write(&state, &a, &plan).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("snapshots")), 0o700);
    for p in a.files.keys() {
        assert_eq!(mode(&state.join(p)), 0o600, "{p}");
    }
    assert_eq!(current(&state, &a).unwrap(), a.files);
    assert_eq!(collect(&state).unwrap().0, a.files);

    std::fs::remove_file(state.join(TOKENS)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", state.join(TOKENS)).unwrap();
    let err = current(&state, &a).unwrap_err();
    assert!(err.contains("tokens.json is a symlink"), "{err}");

    std::fs::remove_file(state.join(TOKENS)).unwrap();
    std::fs::remove_dir_all(state.join("snapshots")).unwrap();
    std::fs::write(state.join("snapshots"), b"x").unwrap();
    let err = current(&state, &a).unwrap_err();
    assert!(err.contains("snapshots is not a directory"), "{err}");
}

#[test]
fn a_passphrase_opens_what_it_closed_and_nothing_else_does() {
    let plain = archive().to_bytes();
    let cipher = encrypt(&plain, &Key::Passphrase(pass("correct horse"))).unwrap();
    assert!(cipher.starts_with(b"age-encryption.org/v1\n"));
    assert!(!cipher.windows(16).any(|w| w == b"server-secret-pw"));
    assert_eq!(is_passphrase(&cipher), Ok(true));
    let open = |c: &[u8], p: &str| decrypt(c, &Unlock::Passphrase(pass(p)));
    assert_eq!(open(&cipher, "correct horse").unwrap(), plain);
    assert_eq!(
        open(&cipher, "wrong horse"),
        Err(OpenError::WrongPassphrase)
    );
    // A byte of the payload changed.
    let mut bad = cipher.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        open(&bad, "correct horse"),
        Err(OpenError::Damaged(_))
    ));
    // Cut short.
    assert!(matches!(
        open(&cipher[..cipher.len() - 20], "correct horse"),
        Err(OpenError::Damaged(_))
    ));
    assert!(matches!(
        is_passphrase(b"tokens.json"),
        Err(OpenError::NotAge(_))
    ));
}

#[test]
#[allow(deprecated)]
fn recipients_open_with_their_identities_only() {
    let plain = archive().to_bytes();
    let alice = age::x25519::Identity::generate();
    let bob = age::x25519::Identity::generate();
    let eve = age::x25519::Identity::generate();
    let key = Key::Recipients(vec![
        parse_recipient(&alice.to_public().to_string()).unwrap(),
        parse_recipient(&bob.to_public().to_string()).unwrap(),
    ]);
    let cipher = encrypt(&plain, &key).unwrap();
    assert_eq!(is_passphrase(&cipher), Ok(false));
    for id in [alice, bob] {
        let got = decrypt(&cipher, &Unlock::Identities(vec![Box::new(id)])).unwrap();
        assert_eq!(got, plain);
    }
    assert_eq!(
        decrypt(&cipher, &Unlock::Identities(vec![Box::new(eve)])),
        Err(OpenError::WrongIdentity)
    );
    // A passphrase does not open a file encrypted to recipients.
    assert_eq!(
        decrypt(&cipher, &Unlock::Passphrase(pass("x"))),
        Err(OpenError::WrongPassphrase)
    );

    // Post-quantum keys too, not mixed with classic ones.
    let pq = age::pq::Identity::generate();
    let key = Key::Recipients(vec![parse_recipient(&pq.to_public().to_string()).unwrap()]);
    let cipher = encrypt(&plain, &key).unwrap();
    assert_eq!(
        decrypt(&cipher, &Unlock::Identities(vec![Box::new(pq.clone())])).unwrap(),
        plain
    );
    let mixed = Key::Recipients(vec![
        parse_recipient(&pq.to_public().to_string()).unwrap(),
        parse_recipient(&age::x25519::Identity::generate().to_public().to_string()).unwrap(),
    ]);
    assert!(encrypt(&plain, &mixed).is_err());

    for bad in ["", "age1", "AGE-SECRET-KEY-1QQQ", "ssh-ed25519 AAAA"] {
        assert!(parse_recipient(bad).is_err(), "{bad}");
    }
}
