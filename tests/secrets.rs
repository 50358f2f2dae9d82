//! `bootstrap secrets export` and `import`, run as a user would: `.bootstrap/`'s secrets to one
//! age-encrypted file and back, with a passphrase or age recipients; a wrong passphrase or
//! identity, a changed file and a token that differs each refused with exit 2 and nothing
//! written. No host is contacted.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::{text, Workdir};

const INVENTORY: &str =
    "[cluster]\nname = \"lab\"\n\n[[node]]\nname = \"m\"\nhost = \"192.0.2.1\"\nrole = \"server\"\n";
const SERVER_TOKEN: &str = "5e1ec7ed0f5e1ec7ed0f5e1ec7ed0f5e1ec7ed0f5e1ec7ed0f5e1ec7ed0f0001";
const AGENT_TOKEN: &str = "a9e47a9e47a9e47a9e47a9e47a9e47a9e47a9e47a9e47a9e47a9e47a9e470002";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIJQgIBADANBgkqhkiG9w0BAQEFAASCCSwwggkoAgEAAoICAQDsealingkey\n-----END PRIVATE KEY-----\n";
const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIFazCCA1OgAwIBAgIUcertificate\n-----END CERTIFICATE-----\n";
const SNAPSHOT: &str = "on-demand-m-1764763200.zip";
const PASSPHRASE: &str = "correct horse battery staple";

/// A workdir with the inventory and nothing else.
fn empty() -> Workdir {
    let w = Workdir::new();
    w.write_inventory(INVENTORY);
    w
}

fn state(w: &Workdir) -> PathBuf {
    w.path(".bootstrap")
}

/// A file as the tool writes it: 0600, its directories 0700.
fn put(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.parent().unwrap())
        .unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn tokens_json(server: &str, agent: &str) -> String {
    format!("{{\n  \"server\": \"{server}\",\n  \"agent\": \"{agent}\"\n}}")
}

fn record_json(name: &str, token: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cluster": "lab", "name": name, "node": "m",
        "path": format!("/var/lib/rancher/k3s/server/db/snapshots/{name}"),
        "created": "2025-12-03T12:00:00Z", "size": 17, "sha256": "ab".repeat(32),
        "token_hash": "0123456789ab", "server_token": token,
    }))
    .unwrap()
}

/// A workdir whose `.bootstrap/` holds what `up` and `etcd snapshot` leave: the tokens, the
/// sealing key, a snapshot and its record, and the release cache.
fn populated() -> Workdir {
    let w = empty();
    let s = state(&w);
    put(
        &s.join("tokens.json"),
        tokens_json(SERVER_TOKEN, AGENT_TOKEN).as_bytes(),
    );
    put(&s.join("sealed-secrets.key"), KEY_PEM.as_bytes());
    put(&s.join("sealed-secrets.crt"), CERT_PEM.as_bytes());
    put(&s.join("snapshots").join(SNAPSHOT), b"etcd snapshot data");
    put(
        &s.join(format!("snapshots/{SNAPSHOT}.json")),
        record_json(SNAPSHOT, SERVER_TOKEN).as_bytes(),
    );
    put(&s.join("cache/v1.33.1+k3s1/k3s"), b"the k3s binary");
    w
}

/// Every file and directory under `dir`: relative path → (mode, content; directories none).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u32, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel, (mode, None));
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    rel,
                    (mode, Some(String::from_utf8_lossy(&bytes).into_owned())),
                );
            }
        }
    }
    out
}

/// Run `bootstrap ARGS...` in `w` with `env` set (and no passphrase from the environment
/// otherwise); stdin is not a terminal.
fn run(w: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::bin());
    c.args(args)
        .env("HOME", w.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("BOOTSTRAP_SECRETS_PASSPHRASE")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bootstrap")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}",
        out.status,
        text(out)
    );
}

/// Exit 2 (bad input), with `want` in the message; returns stderr.
fn refused(out: &Output, want: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(err.contains(want), "{want:?} not in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn passphrase_file(w: &Workdir, pass: &str) -> String {
    let p = w.path(&format!("pass-{}", pass.len()));
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p.to_str().unwrap().to_string()
}

fn export_with_passphrase(w: &Workdir) -> PathBuf {
    let out = w.path("secrets.age");
    let pf = passphrase_file(w, PASSPHRASE);
    let o = run(
        w,
        &[
            "secrets",
            "export",
            w.inventory().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ],
        &[],
    );
    ok(&o, "export");
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The files an archive holds: what `.bootstrap/` has but the snapshot and the cache.
fn secrets_of(w: &Workdir) -> BTreeMap<PathBuf, (u32, Option<String>)> {
    tree(&state(w))
        .into_iter()
        .filter(|(p, _)| !p.starts_with("cache") && *p != Path::new("snapshots").join(SNAPSHOT))
        .collect()
}

#[test]
fn a_passphrase_export_imports_into_an_empty_dir_as_it_was() {
    let a = populated();
    let archive = export_with_passphrase(&a);
    assert_eq!(mode(&archive), 0o600);
    let bytes = std::fs::read(&archive).unwrap();
    assert!(
        bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "),
        "not a passphrase age file"
    );

    // Inside: the versioned JSON archive, without the snapshot or the cache.
    let plain = age::decrypt(
        &age::scrypt::Identity::new(PASSPHRASE.to_string().into()),
        &bytes,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(v["format"], "bootstrap-secrets");
    assert_eq!(v["version"], 1);
    assert_eq!(v["cluster"], "lab");
    let names: Vec<&String> = v["files"].as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "sealed-secrets.crt",
            "sealed-secrets.key",
            &format!("snapshots/{SNAPSHOT}.json"),
            "tokens.json"
        ]
    );

    let b = empty();
    let pf = passphrase_file(&b, PASSPHRASE);
    let inv = b.inventory();
    let o = run(
        &b,
        &[
            "secrets",
            "import",
            inv.to_str().unwrap(),
            archive.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ],
        &[],
    );
    ok(&o, "import");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("4 written, 0 replaced, 0 unchanged"), "{out}");
    assert_eq!(secrets_of(&b), secrets_of(&a));
    assert_eq!(mode(&state(&b)), 0o700);
    assert_eq!(mode(&state(&b).join("snapshots")), 0o700);
    for (p, (m, bytes)) in tree(&state(&b)) {
        assert_eq!(
            m,
            if bytes.is_some() { 0o600 } else { 0o700 },
            "{}",
            p.display()
        );
    }
    assert!(!state(&b).join("snapshots").join(SNAPSHOT).exists());
    assert!(!state(&b).join("cache").exists());
    assert!(!text(&o).contains(SERVER_TOKEN));

    // Again: nothing to do, nothing touched.
    let before = tree(&state(&b));
    let o = run(
        &b,
        &[
            "secrets",
            "import",
            inv.to_str().unwrap(),
            archive.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ],
        &[],
    );
    ok(&o, "import again");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("nothing to do"), "{out}");
    assert!(out.contains("unchanged tokens.json"), "{out}");
    assert_eq!(tree(&state(&b)), before);
}

#[test]
fn the_passphrase_comes_from_the_environment_or_nowhere() {
    let a = populated();
    let archive = a.path("env.age");
    let export = |env: &[(&str, &str)]| {
        run(
            &a,
            &[
                "secrets",
                "export",
                a.inventory().to_str().unwrap(),
                "-o",
                archive.to_str().unwrap(),
            ],
            env,
        )
    };
    // No file, no variable, no terminal: refused, nothing written.
    let err = refused(&export(&[]), "no passphrase");
    assert!(
        err.contains("--passphrase-file") && err.contains("BOOTSTRAP_SECRETS_PASSPHRASE"),
        "{err}"
    );
    assert!(!archive.exists());
    refused(&export(&[("BOOTSTRAP_SECRETS_PASSPHRASE", "")]), "empty");
    assert!(!archive.exists());

    ok(
        &export(&[("BOOTSTRAP_SECRETS_PASSPHRASE", "from the environment")]),
        "export",
    );
    let b = empty();
    let o = run(
        &b,
        &[
            "--output",
            "json",
            "secrets",
            "import",
            b.inventory().to_str().unwrap(),
            archive.to_str().unwrap(),
        ],
        &[("BOOTSTRAP_SECRETS_PASSPHRASE", "from the environment")],
    );
    ok(&o, "import");
    let event = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "secrets-import")
        .expect("a secrets-import event");
    assert_eq!(event["written"].as_array().unwrap().len(), 4, "{event}");
    assert_eq!(secrets_of(&b), secrets_of(&a));
}

#[test]
#[allow(deprecated)]
fn recipients_import_with_their_identity_only() {
    let a = populated();
    let alice = age::x25519::Identity::generate();
    let bob = age::x25519::Identity::generate();
    let eve = age::x25519::Identity::generate();
    let archive = a.path("to-keys.age");
    let o = run(
        &a,
        &[
            "secrets",
            "export",
            a.inventory().to_str().unwrap(),
            "-o",
            archive.to_str().unwrap(),
            "--recipient",
            &alice.to_public().to_string(),
            "--recipient",
            &bob.to_public().to_string(),
        ],
        // Recipients given: the passphrase in the environment plays no part.
        &[("BOOTSTRAP_SECRETS_PASSPHRASE", "unused")],
    );
    ok(&o, "export");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 age recipients"),
        "{}",
        text(&o)
    );
    assert_eq!(mode(&archive), 0o600);

    use age::secrecy::ExposeSecret;
    let identity = |w: &Workdir, name: &str, id: &age::x25519::Identity| {
        let p = w.path(name);
        std::fs::write(
            &p,
            format!("# a test key\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let b = empty();
    let inv = b.inventory();
    let import = |args: &[&str]| {
        let mut all = vec![
            "secrets",
            "import",
            inv.to_str().unwrap(),
            archive.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run(&b, &all, &[])
    };
    // Another key, a passphrase, nothing: refused, nothing written.
    let eve_key = identity(&b, "eve.key", &eve);
    refused(
        &import(&["--identity", &eve_key]),
        "no identity given opens it",
    );
    let pf = passphrase_file(&b, PASSPHRASE);
    refused(
        &import(&["--passphrase-file", &pf]),
        "encrypted to age recipients",
    );
    refused(&import(&[]), "pass --identity");
    let garbage = b.path("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    refused(
        &import(&["--identity", garbage.to_str().unwrap()]),
        "--identity",
    );
    assert!(!state(&b).exists());

    let bob_key = identity(&b, "bob.key", &bob);
    ok(&import(&["--identity", &bob_key]), "import");
    assert_eq!(secrets_of(&b), secrets_of(&a));

    // A key that is not one: refused before anything.
    let o = run(
        &a,
        &[
            "secrets",
            "export",
            a.inventory().to_str().unwrap(),
            "-o",
            a.path("x.age").to_str().unwrap(),
            "--recipient",
            "age1notakey",
        ],
        &[],
    );
    refused(&o, "not an age public key");
    assert!(!a.path("x.age").exists());
}

#[test]
fn a_wrong_passphrase_writes_nothing() {
    let a = populated();
    let archive = export_with_passphrase(&a);
    // Into an empty directory (no `.bootstrap/` made) and into one with other secrets.
    for b in [empty(), {
        let b = empty();
        put(
            &state(&b).join("tokens.json"),
            tokens_json("other-server", "other-agent").as_bytes(),
        );
        b
    }] {
        let before = tree(b.dir.path());
        let pf = passphrase_file(&b, "not the passphrase");
        let before_pf = tree(b.dir.path());
        assert_eq!(before_pf.len(), before.len() + 1);
        let o = run(
            &b,
            &[
                "secrets",
                "import",
                b.inventory().to_str().unwrap(),
                archive.to_str().unwrap(),
                "--passphrase-file",
                &pf,
            ],
            &[],
        );
        refused(&o, "the passphrase does not open it");
        refused(&o, "nothing was written");
        assert_eq!(tree(b.dir.path()), before_pf);
    }
}

#[test]
fn the_archive_holds_no_secret_in_the_clear() {
    let a = populated();
    let archive = std::fs::read(export_with_passphrase(&a)).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let tokens_file = std::fs::read(state(&a).join("tokens.json")).unwrap();
    let record = std::fs::read(state(&a).join(format!("snapshots/{SNAPSHOT}.json"))).unwrap();
    let contains = |needle: &[u8]| archive.windows(needle.len()).any(|w| w == needle);
    for needle in [
        SERVER_TOKEN.as_bytes().to_vec(),
        AGENT_TOKEN.as_bytes().to_vec(),
        b64(&tokens_file).into_bytes(),
        b64(&record).into_bytes(),
        b64(SERVER_TOKEN.as_bytes()).into_bytes(),
        b"sealingkey".to_vec(),
        b64(KEY_PEM.as_bytes()).into_bytes(),
        b"tokens.json".to_vec(),
    ] {
        assert!(
            !contains(&needle),
            "{} is in the archive",
            String::from_utf8_lossy(&needle)
        );
    }
}

#[test]
fn a_different_token_is_refused_without_force() {
    let a = populated();
    let archive = export_with_passphrase(&a);
    let b = empty();
    put(
        &state(&b).join("tokens.json"),
        tokens_json("another-server-token", AGENT_TOKEN).as_bytes(),
    );
    put(
        &state(&b).join("restore.json"),
        br#"{"snapshot":"s","location":"file:///x","token_hash":"abc"}"#,
    );
    let pf = passphrase_file(&b, PASSPHRASE);
    let before = tree(b.dir.path());
    let args = |force: bool| {
        let mut v = vec![
            "secrets".to_string(),
            "import".into(),
            b.inventory().to_str().unwrap().into(),
            archive.to_str().unwrap().into(),
            "--passphrase-file".into(),
            pf.clone(),
        ];
        if force {
            v.push("--force".into());
        }
        v
    };
    let o = run(
        &b,
        &args(false).iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let err = refused(
        &o,
        "tokens.json differs from the archive's: its server token is another one",
    );
    assert!(err.contains("--force"), "{err}");
    assert!(
        !err.contains("another-server-token") && !err.contains(SERVER_TOKEN),
        "{err}"
    );
    assert_eq!(tree(b.dir.path()), before, "something was written");

    let o = run(
        &b,
        &args(true).iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    ok(&o, "import --force");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("replaced  tokens.json (its server token is another one)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(state(&b).join("tokens.json")).unwrap(),
        std::fs::read(state(&a).join("tokens.json")).unwrap()
    );
    assert_eq!(mode(&state(&b).join("tokens.json")), 0o600);
    // What the archive does not hold is left as it was.
    assert!(state(&b).join("restore.json").exists());
}

#[test]
fn a_changed_archive_is_refused_and_writes_nothing() {
    let a = populated();
    let archive = export_with_passphrase(&a);
    let good = std::fs::read(&archive).unwrap();
    let b = empty();
    let pf = passphrase_file(&b, PASSPHRASE);
    let header_end = good.windows(4).position(|w| w == b"\n---").unwrap();
    let flip = |at: usize| {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        bad
    };
    for (what, bytes, want) in [
        (
            "a payload byte",
            flip(good.len() - 10),
            "damaged or was changed",
        ),
        (
            "a byte of the header's MAC",
            flip(header_end + 10),
            "damaged or was changed",
        ),
        (
            "the salt",
            flip(good.windows(7).position(|w| w == b"scrypt ").unwrap() + 9),
            "does not open it",
        ),
        (
            "the end",
            good[..good.len() - 30].to_vec(),
            "damaged or was changed",
        ),
        (
            "everything",
            b"tokens.json\n".to_vec(),
            "not an age-encrypted file",
        ),
    ] {
        let bad = b.path("bad.age");
        std::fs::write(&bad, &bytes).unwrap();
        let before = tree(b.dir.path());
        let o = run(
            &b,
            &[
                "secrets",
                "import",
                b.inventory().to_str().unwrap(),
                bad.to_str().unwrap(),
                "--passphrase-file",
                &pf,
            ],
            &[],
        );
        let err = refused(&o, want);
        assert!(err.contains("nothing was written"), "{what}: {err}");
        assert_eq!(tree(b.dir.path()), before, "{what}");
        assert!(!state(&b).exists(), "{what}");
    }
}

#[test]
fn an_empty_state_dir_has_nothing_to_export() {
    let w = empty();
    let pf = passphrase_file(&w, PASSPHRASE);
    let out = w.path("x.age");
    let o = run(
        &w,
        &[
            "secrets",
            "export",
            w.inventory().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ],
        &[],
    );
    refused(&o, "nothing to export");
    assert!(!out.exists());
    // A broken backup is not exported (import would refuse it).
    put(&state(&w).join("tokens.json"), b"{\"server\": ");
    let o = run(
        &w,
        &[
            "secrets",
            "export",
            w.inventory().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("tokens.json: not a token backup"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}
