//! The command line on bad input: every broken inventory is refused with exit
//! code 2 and a `file:line:column` message before any host is contacted, for
//! every command that reads an inventory; nothing panics.

use std::path::Path;
use std::process::Command;

fn bootstrap(args: &[&str], home: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run bootstrap")
}

/// [`bootstrap`] under a watchdog: a run that has not ended after two minutes (every mutated
/// inventory's hosts refuse or time out within seconds) is killed and reported as a hang.
fn bootstrap_or_hang(args: &[&str], home: &Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bootstrap");
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "bootstrap {args:?} hung:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn broken_inventories_exit_2_with_a_location_and_touch_nothing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inventory");
    let home = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // Copied to a scratch dir so a `.bootstrap/` written by mistake would show.
        let work = tempfile::tempdir().unwrap();
        let inv = work.path().join(path.file_name().unwrap());
        std::fs::copy(&path, &inv).unwrap();
        if dir.join("manifests").is_dir() {
            copy_dir(&dir.join("manifests"), &work.path().join("manifests"));
        }
        for cmd in ["up", "plan", "status"] {
            let out = bootstrap(&[cmd, inv.to_str().unwrap()], home.path());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd} {}: {stderr}",
                path.display()
            );
            let name = path.file_name().unwrap().to_str().unwrap();
            // `<file>:<line>:<column>: error: ...` (the file is the inventory,
            // or the manifest it names when the problem is inside that).
            let located = stderr.lines().any(|l| {
                l.split_once(": error")
                    .map(|(loc, _)| {
                        let mut it = loc.rsplitn(3, ':');
                        let col = it.next().and_then(|c| c.parse::<usize>().ok());
                        let line = it.next().and_then(|c| c.parse::<usize>().ok());
                        let file = it.next().unwrap_or("");
                        matches!((line, col), (Some(l), Some(c)) if l > 0 && c > 0)
                            && (file.ends_with(".toml") || file.ends_with(".yaml"))
                    })
                    .unwrap_or(false)
            });
            assert!(located, "{cmd} {name}: no file:line:column in:\n{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        assert!(
            !work.path().join(".bootstrap").exists(),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} broken inventories");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn missing_inventory_file_is_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let out = bootstrap(&["up", "/nonexistent/inventory.toml"], home.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/inventory.toml"));
}

#[test]
fn bad_invocation_is_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["up"][..],
        &["frobnicate", "x.toml"],
        &["up", "x.toml", "--parallel", "0"],
        // A deadline that would overflow the clock: refused while parsing, before anything.
        &["up", "x.toml", "--timeout", "18446744073709551615"],
        &["up", "x.toml", "--timeout", "86401"],
    ] {
        let out = bootstrap(args, home.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn help_lists_only_working_commands() {
    let home = tempfile::tempdir().unwrap();
    let out = bootstrap(&["--help"], home.path());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // The commands the help lists...
    let listed: std::collections::BTreeSet<String> = text
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands section:\n{text}"))
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect();
    // ...are exactly those README's command reference documents (`bootstrap CMD ...`).
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("```")
        .nth(1)
        .expect("README's first code block: the command reference");
    let documented: std::collections::BTreeSet<String> = block
        .lines()
        .filter_map(|l| l.strip_prefix("bootstrap "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(documented.len() >= 9, "{documented:?}");
    assert_eq!(listed, documented, "{text}");
}

#[test]
fn a_duration_past_a_day_in_the_inventory_is_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let inv = work.path().join("inventory.toml");
    std::fs::write(
        &inv,
        "[cluster]\nname = \"t\"\n\n[ssh]\ncommand_timeout = 9223372036854775807\n\n[[node]]\nname = \"m\"\nhost = \"192.0.2.1\"\nrole = \"server\"\n",
    )
    .unwrap();
    let out = bootstrap(&["plan", inv.to_str().unwrap()], home.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("longer than a day"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The inventory fuzz target, bounded for CI: the seed and HA examples mutated a fixed number
/// of ways (a byte changed, a line dropped or doubled, the text cut short), each run through
/// `bootstrap plan`. Every run ends within seconds with exit 0, 1 or 2 and never panics.
/// (With an empty HOME no host is ever dialled: the key and known_hosts files they name are
/// missing, which is exit 2 before connecting.)
#[test]
fn mutated_inventories_exit_0_1_or_2_and_never_panic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    copy_dir(&examples.join("manifests"), &work.path().join("manifests"));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    let noise = b"=[]{}\"'#\n,.:0 xZ\\\xff";
    let mut runs = 0;
    for name in ["seed.toml", "ha.toml"] {
        let text = std::fs::read(examples.join(name)).unwrap();
        for case in 0..60 {
            let mut t = text.clone();
            match case % 4 {
                0 => {
                    let i = next(t.len());
                    t[i] = noise[next(noise.len())];
                }
                1 => t.truncate(next(t.len())),
                _ => {
                    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
                    let k = next(lines.len());
                    let mut out = Vec::new();
                    for (j, l) in lines.iter().enumerate() {
                        let times = if j != k {
                            1
                        } else if case % 4 == 2 {
                            0
                        } else {
                            2
                        };
                        for _ in 0..times {
                            out.extend_from_slice(l);
                            out.push(b'\n');
                        }
                    }
                    t = out;
                }
            }
            let inv = work.path().join(format!("m-{name}"));
            std::fs::write(&inv, &t).unwrap();
            let out = bootstrap_or_hang(&["plan", inv.to_str().unwrap()], home.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0..=2)) && !err.contains("panicked"),
                "{name} case {case}: exit {:?}\n{err}\n--- input:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&t)
            );
            runs += 1;
        }
    }
    assert_eq!(runs, 120);
}
