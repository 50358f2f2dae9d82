//! Checks that more than one table of the inventory uses (the validation of `[[charts]]`,
//! `[etcd]` and the rest): numbers, local paths, chart archives, pod placement and
//! `{{ variables.NAME }}` uses. They depend on nothing above them, so `validate`, `charts` and
//! `etcd` all read them top-down.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::error::{Diagnostic, ErrorKind, LineIndex, Report};
use super::raw::{SpannedMap, S};
use super::{resolve_path, syntax, Taint};

/// A number from 1 to `max`.
pub(crate) fn count_up_to(r: &mut Report, v: &S<i64>, what: &str, max: u32) -> Option<u32> {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if (1..=max).contains(&n) => Some(n),
        _ => {
            r.error(
                v.span(),
                ErrorKind::InvalidNumber,
                format!(
                    "{what} is {}; expected a number from 1 to {max}",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

pub(crate) fn path_value(
    r: &mut Report,
    v: &S<String>,
    what: &str,
    base: &Path,
) -> Option<PathBuf> {
    match resolve_path(v.get_ref(), base) {
        Ok(p) => Some(p),
        Err(e) => {
            r.error(v.span(), ErrorKind::InvalidPath, format!("{what}: {e}"));
            None
        }
    }
}

/// Where the files the inventory ships into the cluster or onto the servers (`[[manifests]]`,
/// `values_file`, `chart_archive`, `endpoint_ca`) may come from: under the inventory's
/// directory, unless `[cluster] allow_files_outside_inventory = true`. A change to the
/// inventory cannot then send the operator's other files (an SSH key, a kubeconfig) to
/// everyone who reads HelmCharts or is root on a server.
pub(crate) struct Shipped<'a> {
    pub base: &'a Path,
    pub anywhere: bool,
}

/// A path the inventory ships (see [`Shipped`]): relative, without `~`, and inside the
/// inventory's directory after normalising and after following symlinks.
pub(crate) fn shipped_path(
    r: &mut Report,
    v: &S<String>,
    what: &str,
    files: &Shipped,
) -> Option<PathBuf> {
    if files.anywhere {
        return path_value(r, v, what, files.base);
    }
    let raw = v.get_ref();
    let outside = |why: &str| {
        format!("{what} \"{raw}\" {why}: files the inventory ships to the cluster come from the inventory's directory ({}), so a change to the inventory cannot send this machine's other files; copy the file there, or set allow_files_outside_inventory = true in [cluster]", files.base.display())
    };
    if raw.is_empty() {
        r.error(
            v.span(),
            ErrorKind::InvalidPath,
            format!("{what}: the path is empty"),
        );
        return None;
    }
    let why = if raw.starts_with('~') {
        Some("starts with '~'")
    } else if Path::new(raw).is_absolute() {
        Some("is an absolute path")
    } else {
        let mut depth: i32 = 0;
        let mut escapes = false;
        for c in Path::new(raw).components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            escapes |= depth < 0;
        }
        escapes.then_some("leads out of the inventory's directory with '..'")
    };
    if let Some(why) = why {
        r.error(v.span(), ErrorKind::InvalidPath, outside(why));
        return None;
    }
    let path = files.base.join(raw);
    // A symlink inside the directory may point anywhere: follow it where the file exists.
    if let (Ok(real), Ok(real_base)) = (path.canonicalize(), files.base.canonicalize()) {
        if !real.starts_with(&real_base) {
            r.error(
                v.span(),
                ErrorKind::InvalidPath,
                outside(&format!("is a symlink to {}", real.display())),
            );
            return None;
        }
    }
    Some(path)
}

/// `chart_archive`: a local chart `.tgz` embedded as the HelmChart's `chartContent` (air gap).
/// It must exist, and fit a ConfigMap once base64-encoded (1 MiB).
pub(crate) fn chart_archive_value(
    r: &mut Report,
    v: &S<String>,
    files: &Shipped,
) -> Option<PathBuf> {
    let p = shipped_path(r, v, "chart_archive", files)?;
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.len() <= 700 * 1024 => Some(p),
        Ok(m) if m.is_file() => {
            r.error(
                v.span(),
                ErrorKind::InvalidPath,
                format!("chart_archive {}: {} bytes is too large; helm-controller keeps the chart in a ConfigMap (1 MiB after base64), so use an archive under 700 KiB", p.display(), m.len()),
            );
            None
        }
        _ => {
            r.error(
                v.span(),
                ErrorKind::InvalidPath,
                format!("chart_archive {}: no such file; give the path of the chart's .tgz (e.g. from `helm pull`)", p.display()),
            );
            None
        }
    }
}

/// Pod placement of an add-on: a node selector (label syntax) and tolerations in taint syntax
/// (`key=value:Effect` → operator Equal, `key:Effect` → Exists).
pub(crate) fn placement(
    node_selector: &SpannedMap<String>,
    tolerations: Option<&Vec<S<String>>>,
    r: &mut Report,
    ctx: &str,
) -> (BTreeMap<String, String>, Vec<Taint>) {
    let mut sel = BTreeMap::new();
    for (k, v) in node_selector {
        // Any label a node carries may be selected, k3s's own included: syntax only.
        let bad = syntax::label_key(k.get_ref())
            .err()
            .map(|e| {
                (
                    k.span(),
                    format!("key \"{}\" is not a label key ({e})", k.get_ref()),
                )
            })
            .or_else(|| {
                syntax::label_value(v.get_ref()).err().map(|e| {
                    (
                        v.span(),
                        format!("value \"{}\" is not a label value ({e})", v.get_ref()),
                    )
                })
            });
        match bad {
            Some((span, why)) => r.error(
                span,
                ErrorKind::InvalidLabel,
                format!("{ctx}: node_selector {why}"),
            ),
            None => {
                sel.insert(k.get_ref().clone(), v.get_ref().clone());
            }
        }
    }
    let mut tols = Vec::new();
    for t in tolerations.into_iter().flatten() {
        match Taint::parse(t.get_ref()) {
            Ok(x) => tols.push(x),
            Err(e) => r.error(
                t.span(),
                ErrorKind::InvalidTaint,
                format!("{ctx}: toleration \"{}\" is not valid ({e}); expected key=value:Effect or key:Effect, the taint it tolerates", t.get_ref()),
            ),
        }
    }
    (sel, tols)
}

/// `{{ variables.NAME }}` uses in a manifest whose NAME is not in `[variables]`.
pub(crate) fn undefined_variables(
    text: &str,
    file: &Path,
    variables: &BTreeMap<String, String>,
) -> Vec<Diagnostic> {
    let index = LineIndex::new(text);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text.get(from..).and_then(|t| t.find("{{")) {
        let start = from + open + 2;
        let Some(len) = text.get(start..).and_then(|t| t.find("}}")) else {
            break;
        };
        let inner = text.get(start..start + len).unwrap_or("");
        for (at, _) in inner.match_indices("variables.") {
            let name_start = at + "variables.".len();
            let name: String = inner
                .get(name_start..)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !variables.contains_key(&name) {
                let (line, column) = index.position(start + name_start);
                let hint = syntax::closest(&name, variables.keys().map(String::as_str))
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                out.push(Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    column,
                    kind: ErrorKind::UndefinedVariable,
                    message: format!(
                        "variables.{name} is not defined{hint}; add {name} = \"...\" to the inventory's [variables]"
                    ),
                });
            }
        }
        from = start + len + 2;
    }
    out
}
