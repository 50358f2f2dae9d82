//! `secrets export` and `secrets import`: `.bootstrap/`'s secrets as one age-encrypted file to
//! keep off this machine, and back (the archive, its checks and the import's decisions are in
//! [`crate::secrets`]). Neither contacts a host. Bad input (a wrong passphrase or identity, a
//! damaged archive, a file that differs without `--force`) is exit 2 and writes nothing.

use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use anyhow::{anyhow, Context, Result};

use super::Ctx;
use crate::outcome::usage;
use crate::report::{clean, OutputFormat};
use crate::secrets::{self, Archive, Change, Key, Kind, Unlock};

/// The environment variable a passphrase can come from.
pub const PASSPHRASE_ENV: &str = "BOOTSTRAP_SECRETS_PASSPHRASE";

/// The passphrase from `--passphrase-file`, else [`PASSPHRASE_ENV`], else asked on the
/// terminal (twice when `confirm`); none of them is bad input.
fn passphrase(file: Option<&Path>, confirm: bool, what: &str) -> Result<SecretString> {
    let p = if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("--passphrase-file {}: {e}", f.display())))?;
        let line = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if line.contains('\n') {
            return Err(usage(format!(
                "--passphrase-file {}: it holds more than one line; put the passphrase alone on the first",
                f.display()
            )));
        }
        if line.is_empty() {
            return Err(usage(format!(
                "--passphrase-file {}: it is empty",
                f.display()
            )));
        }
        line.to_string()
    } else if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
        let v = v
            .into_string()
            .map_err(|_| usage(format!("{PASSPHRASE_ENV} is not UTF-8")))?;
        if v.is_empty() {
            return Err(usage(format!("{PASSPHRASE_ENV} is set but empty")));
        }
        v
    } else {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "no passphrase for {what}: pass --passphrase-file PATH, set {PASSPHRASE_ENV}, or run it on a terminal to be asked{}",
                if confirm {
                    ", or encrypt to age public keys with --recipient age1..."
                } else {
                    ""
                }
            )));
        }
        let p = rpassword::prompt_password(format!("Passphrase for {what}: "))
            .context("reading the passphrase from the terminal")?;
        if p.is_empty() {
            return Err(usage("the passphrase is empty; nothing was written"));
        }
        if confirm {
            let again = rpassword::prompt_password("The same passphrase again: ")
                .context("reading the passphrase from the terminal")?;
            if again != p {
                return Err(usage("the two passphrases differ; nothing was written"));
            }
        }
        p
    };
    crate::ssh::register_secret(p.clone());
    Ok(SecretString::from(p))
}

/// Masks the archive's tokens in every output from now on (none is printed; this is in case).
fn register(archive: &Archive) {
    for (path, bytes) in &archive.files {
        match Kind::of(path) {
            Some(Kind::Tokens) => {
                if let Ok(t) = serde_json::from_slice::<crate::k3s::token::TokenBackup>(bytes) {
                    crate::ssh::register_secret(t.server);
                    crate::ssh::register_secret(t.agent);
                }
            }
            Some(Kind::SnapshotRecord) => {
                if let Ok(r) = serde_json::from_slice::<crate::k3s::snapshot::Record>(bytes) {
                    crate::ssh::register_secret(r.server_token);
                }
            }
            _ => {}
        }
    }
}

/// `bootstrap secrets export INVENTORY -o FILE`.
pub fn export(
    cx: &Ctx,
    out: &Path,
    recipients: &[String],
    passphrase_file: Option<&Path>,
) -> Result<()> {
    let dir = cx.inv.state_dir();
    let created = crate::report::rfc3339(time::OffsetDateTime::now_utc());
    let (archive, left_out) = secrets::archive_of(&dir, &cx.inv.cluster.name, &created)
        .map_err(|e| anyhow!("{e}; nothing was written"))?;
    register(&archive);
    if archive.files.is_empty() {
        return Err(usage(format!(
            "nothing to export: {} holds none of {}, {}, {}, {} or {}/*.json (run `bootstrap up` first)",
            dir.display(),
            secrets::TOKENS,
            secrets::SEALING_KEY,
            secrets::SEALING_CERT,
            secrets::RESTORE,
            secrets::SNAPSHOTS
        )));
    }
    if !archive.files.contains_key(secrets::TOKENS) {
        cx.rep.warn(&format!(
            "{} has no {}: the archive holds no cluster tokens",
            dir.display(),
            secrets::TOKENS
        ));
    }
    let key = if recipients.is_empty() {
        Key::Passphrase(passphrase(
            passphrase_file,
            true,
            &out.display().to_string(),
        )?)
    } else {
        Key::Recipients(
            recipients
                .iter()
                .map(|r| {
                    secrets::parse_recipient(r).map_err(|e| usage(format!("--recipient: {e}")))
                })
                .collect::<Result<_>>()?,
        )
    };
    let bytes = secrets::encrypt(&archive.to_bytes(), &key).map_err(usage)?;
    let target = crate::local::through_links(out);
    crate::local::write_atomic(&target, &bytes, 0o600)
        .with_context(|| format!("writing {}", out.display()))?;

    let names: Vec<&String> = archive.files.keys().collect();
    let encryption = match &key {
        Key::Passphrase(_) => "a passphrase".to_string(),
        Key::Recipients(r) if r.len() == 1 => "1 age recipient".to_string(),
        Key::Recipients(r) => format!("{} age recipients", r.len()),
    };
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(serde_json::json!({
            "event": "secrets-export", "cluster": archive.cluster, "file": out.display().to_string(),
            "encryption": if recipients.is_empty() { "passphrase" } else { "recipients" },
            "recipients": recipients.len(), "files": names, "left_out": left_out,
        })),
        OutputFormat::Text => {
            if !left_out.is_empty() {
                cx.rep.info(&format!(
                    "left out of the archive, as not secrets or too large (keep snapshot files with your other backups): {}",
                    left_out.join(", ")
                ));
            }
            println!(
                "{}",
                clean(&format!(
                    "{}: wrote {} (0600, encrypted to {encryption}) with {} file{} of {}: {}",
                    archive.cluster,
                    out.display(),
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    dir.display(),
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            );
        }
    }
    Ok(())
}

/// `bootstrap secrets import INVENTORY FILE`.
pub fn import(
    cx: &Ctx,
    file: &Path,
    identities: &[PathBuf],
    passphrase_file: Option<&Path>,
    force: bool,
) -> Result<()> {
    let shown = file.display().to_string();
    let meta = std::fs::metadata(file).map_err(|e| usage(format!("{shown}: {e}")))?;
    if meta.len() > secrets::MAX_ARCHIVE {
        return Err(usage(format!(
            "{shown}: {}; nothing was written",
            secrets::OpenError::TooLarge
        )));
    }
    let cipher = std::fs::read(file).map_err(|e| usage(format!("{shown}: {e}")))?;
    let is_passphrase = secrets::is_passphrase(&cipher)
        .map_err(|e| usage(format!("{shown}: {e}; nothing was written")))?;
    let unlock = if is_passphrase {
        if !identities.is_empty() {
            return Err(usage(format!(
                "{shown} is encrypted with a passphrase, not to age recipients: drop --identity and pass --passphrase-file, set {PASSPHRASE_ENV}, or run it on a terminal to be asked"
            )));
        }
        Unlock::Passphrase(passphrase(passphrase_file, false, &shown)?)
    } else {
        if passphrase_file.is_some() || identities.is_empty() {
            return Err(usage(format!(
                "{shown} is encrypted to age recipients, not with a passphrase: pass --identity PATH, a file with the secret key of one of them (AGE-SECRET-KEY-1...)"
            )));
        }
        let mut ids = Vec::new();
        for p in identities {
            let f = age::IdentityFile::from_file(p.to_string_lossy().into_owned())
                .map_err(|e| usage(format!("--identity {}: {e}", p.display())))?;
            let found = f
                .into_identities()
                .map_err(|e| usage(format!("--identity {}: {e}", p.display())))?;
            if found.is_empty() {
                return Err(usage(format!(
                    "--identity {}: it holds no age identity (AGE-SECRET-KEY-1...)",
                    p.display()
                )));
            }
            ids.extend(found);
        }
        Unlock::Identities(ids)
    };
    let plain = secrets::decrypt(&cipher, &unlock)
        .map_err(|e| usage(format!("{shown}: {e}; nothing was written")))?;
    let archive =
        Archive::parse(&plain).map_err(|e| usage(format!("{shown}: {e}; nothing was written")))?;
    register(&archive);

    let dir = cx.inv.state_dir();
    let current =
        secrets::current(&dir, &archive).map_err(|e| anyhow!("{e}; nothing was written"))?;
    let plan = secrets::plan_import(&archive, &current, &cx.inv.cluster.name, force).map_err(|r| {
        usage(format!(
            "refusing to import {shown} into {}:\n  {}\nnothing was written; pass --force to replace them (keep a copy of {} first)",
            dir.display(),
            r.to_string().replace('\n', "\n  "),
            dir.display()
        ))
    })?;
    if archive.cluster != cx.inv.cluster.name {
        cx.rep.warn(&format!(
            "{shown} holds the secrets of cluster {:?}; imported into cluster {:?}'s {} (--force)",
            archive.cluster,
            cx.inv.cluster.name,
            dir.display()
        ));
    }
    secrets::write(&dir, &archive, &plan)
        .with_context(|| format!("writing into {}", dir.display()))?;

    let of = |c: Change| -> Vec<&str> {
        plan.iter()
            .filter(|e| e.change == c)
            .map(|e| e.path.as_str())
            .collect()
    };
    let (written, replaced, unchanged) = (of(Change::New), of(Change::Replace), of(Change::Same));
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(serde_json::json!({
            "event": "secrets-import", "cluster": archive.cluster, "created": archive.created,
            "file": shown, "dir": dir.display().to_string(),
            "written": written, "replaced": replaced, "unchanged": unchanged,
        })),
        OutputFormat::Text => {
            let mut text = String::new();
            for e in &plan {
                let line = match e.change {
                    Change::New => format!("  wrote     {}\n", e.path),
                    Change::Replace => format!(
                        "  replaced  {} ({})\n",
                        e.path,
                        e.why.as_deref().unwrap_or("it differed")
                    ),
                    Change::Same => format!("  unchanged {}\n", e.path),
                };
                text.push_str(&line);
            }
            if written.is_empty() && replaced.is_empty() {
                text.push_str(&format!(
                    "nothing to do: every file of {shown} is already in {} (exported {})\n",
                    dir.display(),
                    archive.created
                ));
            } else {
                text.push_str(&format!(
                    "{}: imported {shown} (exported {}) into {}: {} written, {} replaced, {} unchanged (files 0600)\n",
                    cx.inv.cluster.name,
                    archive.created,
                    dir.display(),
                    written.len(),
                    replaced.len(),
                    unchanged.len()
                ));
            }
            print!("{}", clean(&text));
        }
    }
    Ok(())
}
