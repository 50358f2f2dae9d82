//! Phases `add-ons` and `add-on health`: remove what the inventory dropped, write what
//! differs to the manifests directory of every server, then wait until every add-on is
//! healthy, writing the files that need a chart's CRDs once that chart is (src/addons).
//!
//! The host facts hold every manifest's sha256 and the cluster facts the health objects, so a
//! converged cluster gets no step at all.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{Action, Applied, Cx, Group, Mode, Phase, Step};
use crate::addons::{charts, health, AddonKind, HelmRelease, ManifestFile, Owner, Stage, PREFIX};
use crate::facts::HostFacts;

/// A manifest bootstrap wrote earlier that the inventory no longer asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stale {
    /// Companions first (their CRDs go with the chart), then charts, then extras.
    order: u8,
    file: String,
}

fn stale_files(servers: &[(&str, &HostFacts)], desired: &BTreeSet<String>) -> Vec<Stale> {
    let mut out = BTreeSet::new();
    for (_, f) in servers {
        for file in f.manifests.keys() {
            if file.starts_with(PREFIX) && !desired.contains(file) {
                let chart =
                    AddonKind::of_chart_file(file).is_some() || charts::of_file(file).is_some();
                out.insert(Stale {
                    order: if chart { 1 } else { 0 },
                    file: file.clone(),
                });
            }
        }
        for n in &f.addons.extra_record {
            let file = format!("{n}.yaml");
            if !desired.contains(&file) {
                out.insert(Stale { order: 2, file });
            }
        }
    }
    out.into_iter().collect()
}

fn holds(f: &HostFacts, file: &str) -> bool {
    f.manifests.contains_key(file)
        || f.addons
            .extra_record
            .iter()
            .any(|n| format!("{n}.yaml") == file)
}

fn applied(f: &ManifestFile) -> Applied {
    Applied {
        file: f.file.clone(),
        owner: f.owner.clone(),
        addon: f.addon_name().to_string(),
        sha256: f.sha256(),
    }
}

pub(crate) fn phases(cx: &Cx<'_>) -> Result<Vec<Phase>> {
    let spec = &cx.facts.local.addons;
    let servers: Vec<(&str, &HostFacts)> = cx
        .inv
        .servers()
        .filter_map(|n| Some((n.name.as_str(), cx.facts.host(&n.name)?)))
        .collect();
    let leftovers = servers.iter().any(|(_, f)| {
        f.manifests.keys().any(|m| m.starts_with(PREFIX)) || !f.addons.extra_record.is_empty()
    });
    if spec.is_empty() && !leftovers {
        return Ok(vec![]);
    }
    if let Some(snap) = cx.facts.cluster.objects.as_ref() {
        crd_upgrades(spec, snap)?;
    }
    let mut files = spec.files(cx.sealing_key.as_ref())?;
    // Sorted by name: the deploy controller's order, so the key Secret precedes its chart.
    files.sort_by(|a, b| a.file.cmp(&b.file));
    let desired: BTreeSet<String> = files.iter().map(|f| f.file.clone()).collect();
    let stale = stale_files(&servers, &desired);
    // Uninstalling Longhorn deletes every volume, so it happens only when the inventory says
    // so; Longhorn's own uninstall refuses without its `deleting-confirmation-flag` as well
    // (longhorn-manager v1.12.1 `controller/uninstall_controller.go`:407-409).
    let longhorn_file = AddonKind::Longhorn.chart_file();
    if stale.iter().any(|s| s.file == longhorn_file) && !spec.longhorn_uninstall {
        let on: Vec<&str> = servers
            .iter()
            .filter(|(_, f)| holds(f, &longhorn_file))
            .map(|(n, _)| *n)
            .collect();
        anyhow::bail!(
            "the inventory has no [addons.longhorn] but Longhorn is installed ({longhorn_file} on {}); removing it would delete every Longhorn volume and its data, so bootstrap does it only when told: put back [addons.longhorn] with `uninstall = true` to remove it, or put back its settings to keep it. Nothing was changed.",
            on.join(", ")
        );
    }
    // k3s's bundled Traefik is the HelmChart kube-system/traefik, the same object the add-on
    // is: with `traefik` no longer disabled, the restarted servers' deploy controller applies
    // the bundled chart over ours before its removal runs (k3s pkg/deploy/controller.go
    // `deploy`), and removing our file then uninstalls the bundled release while the add-on's
    // stays behind in its own namespace.
    let traefik_file = AddonKind::Traefik.chart_file();
    let disabled = cx.inv.disabled_components();
    if stale.iter().any(|s| s.file == traefik_file) && !disabled.iter().any(|d| d == "traefik") {
        anyhow::bail!(
            "the inventory has no [addons.traefik] but the Traefik add-on is installed; without it k3s's bundled Traefik comes back under the same name (HelmChart kube-system/traefik), which would take over the add-on's chart before bootstrap removes it and leave the add-on's release running. To remove Traefik, add \"traefik\" to `disable` in [cluster]; to go back to the bundled Traefik, do that first, run `bootstrap up`, then drop it from `disable` and run again. Nothing was changed."
        );
    }
    let mut record: Vec<String> = spec.extras.iter().map(|x| x.name.clone()).collect();
    record.sort();
    let missing_on = |f: &ManifestFile| -> Vec<&str> {
        servers
            .iter()
            .filter(|(_, h)| h.manifests.get(&f.file) != Some(&f.sha256()))
            .map(|(n, _)| *n)
            .collect()
    };

    // Per server: removals (objects deleted through the first server holding the file),
    // the record of extra manifests, then the files that need no CRD.
    let mut groups = Vec::new();
    for (name, f) in &servers {
        let mut steps = Vec::new();
        for st in &stale {
            if !holds(f, &st.file) {
                continue;
            }
            let first = servers
                .iter()
                .find(|(_, h)| holds(h, &st.file))
                .map(|(n, _)| *n);
            steps.push(Step::host(
                name,
                Action::RemoveManifest {
                    file: st.file.clone(),
                    delete_objects: first == Some(*name),
                    release: AddonKind::of_chart_file(&st.file)
                        .map(|k| k.chart_name())
                        .or_else(|| charts::of_file(&st.file))
                        .map(str::to_string),
                },
            ));
        }
        if f.addons.extra_record != record {
            steps.push(Step::host(
                name,
                Action::WriteExtraRecord {
                    names: record.clone(),
                },
            ));
        }
        for m in files.iter().filter(|m| m.stage == Stage::Base) {
            if f.manifests.get(&m.file) != Some(&m.sha256()) {
                steps.push(Step::host(name, Action::WriteManifest(m.clone())));
            }
        }
        if !steps.is_empty() {
            groups.push(Group {
                host: name.to_string(),
                steps,
            });
        }
    }
    let changed = !groups.is_empty();
    let mut out = Vec::new();
    out.extend(Phase::of("add-ons", Mode::Serial, groups));

    // Health: the files that wait for a HelmChart (a chart's CRDs) once it is healthy, in
    // the order of their `after` chains, then everything.
    let releases = spec.releases_for(&files);
    let waits = spec.wait_kinds();
    let depth = depths(&files);
    let mut pending: Vec<(&ManifestFile, Vec<String>)> = files
        .iter()
        .filter_map(|m| match &m.stage {
            Stage::After(deps) if !missing_on(m).is_empty() => Some((m, deps.clone())),
            _ => None,
        })
        .collect();
    pending.sort_by_key(|(m, deps)| {
        let d = deps
            .iter()
            .map(|d| depth.get(d).copied().unwrap_or(0))
            .max();
        (d, m.file.clone())
    });
    let objects = cx.facts.cluster.objects.as_ref();
    let healthy = objects.is_some_and(|snap| {
        releases.iter().all(|r| health::evaluate(snap, r).healthy())
            && files.iter().all(|f| snap.file_applied(f))
    });
    if (!changed && pending.is_empty() && healthy) || (releases.is_empty() && files.is_empty()) {
        return Ok(out);
    }
    let api = &cx.api;
    let mut steps = Vec::new();
    let mut waited: BTreeSet<String> = BTreeSet::new();
    let of = |names: &[String]| -> Vec<HelmRelease> {
        names
            .iter()
            .filter_map(|n| releases.iter().find(|r| &r.name == n).cloned())
            .collect()
    };
    for (m, deps) in &pending {
        if deps.iter().any(|d| !waited.contains(d)) {
            waited.extend(deps.iter().cloned());
            steps.push(Step::api(
                api,
                Action::WaitAddons {
                    releases: of(deps),
                    waits: waits.clone(),
                    applied: vec![],
                },
            ));
        }
        for s in missing_on(m) {
            steps.push(Step::host(s, Action::WriteManifest((*m).clone())));
        }
    }
    steps.push(Step::api(
        api,
        Action::WaitAddons {
            releases,
            waits,
            applied: files.iter().map(applied).collect(),
        },
    ));
    out.push(Phase::single("add-on health", "add-ons", steps));
    Ok(out)
}

/// How deep each HelmChart sits in the `after` chains: 0 for one written at once, else one
/// more than the deepest it waits for (the inventory has no cycles; the bound is a guard).
fn depths(files: &[ManifestFile]) -> std::collections::BTreeMap<String, usize> {
    let deps: Vec<(String, Vec<String>)> = files
        .iter()
        .filter_map(|f| {
            let name = match &f.owner {
                Owner::Chart(n) => n.clone(),
                Owner::Addon(k) if f.file == k.chart_file() => k.chart_name().to_string(),
                _ => return None,
            };
            let after = match &f.stage {
                Stage::Base => vec![],
                Stage::After(d) => d.clone(),
            };
            Some((name, after))
        })
        .collect();
    fn depth(n: &str, deps: &[(String, Vec<String>)], bound: usize) -> usize {
        let Some((_, after)) = deps.iter().find(|(x, _)| x == n) else {
            return 0;
        };
        if after.is_empty() || bound == 0 {
            return 0;
        }
        1 + after
            .iter()
            .map(|a| depth(a, deps, bound - 1))
            .max()
            .unwrap_or(0)
    }
    deps.iter()
        .map(|(n, _)| (n.clone(), depth(n, &deps, deps.len())))
        .collect()
}

/// Charts that keep their CRDs in `crds/` (Traefik, Sealed Secrets: reference/addons.md §1)
/// get them installed once and never upgraded: helm skips `crds/` on upgrade (helm docs,
/// "Custom Resource Definitions"). A version change is refused until the operator has
/// applied the new version's CRDs, as the chart says (traefik-helm-chart v41.3.0
/// `README.md`:159), and says so with `crds_applied`.
fn crd_upgrades(spec: &crate::addons::AddonsSpec, snap: &health::Snapshot) -> Result<()> {
    // (add-on, its repository, the version wanted, the version whose CRDs were applied)
    let charts = [
        spec.traefik.as_ref().map(|t| {
            (
                AddonKind::Traefik,
                crate::addons::traefik::REPO,
                &t.version,
                &t.crds_applied,
            )
        }),
        spec.sealed_secrets.as_ref().map(|x| {
            (
                AddonKind::SealedSecrets,
                crate::addons::sealed_secrets::REPO,
                &x.version,
                &x.crds_applied,
            )
        }),
    ];
    let mut errors = Vec::new();
    for (kind, repo, want, applied) in charts.into_iter().flatten() {
        let how = format!(
            "helm show crds {} --repo {repo} --version {want} | kubectl apply --server-side --force-conflicts -f -",
            kind.chart_name()
        );
        let Some(have) = snap
            .get("HelmChart", "kube-system", kind.chart_name())
            .and_then(|c| c["spec"]["version"].as_str())
        else {
            continue;
        };
        if have == want || applied.as_deref() == Some(want.as_str()) {
            continue;
        }
        errors.push(format!(
            "add-on {kind}: the chart goes from {have} to {want}, but helm never upgrades the CRDs in a chart's crds/ directory, so the new chart would run against the old CRDs. Apply the new ones first (with the cluster's kubeconfig: {how}), then confirm with `crds_applied = \"{want}\"` under [addons.{}] and run again. Nothing was changed.",
            kind.inventory_name()
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addons::AddonsSpec;

    #[test]
    fn a_chart_bump_that_leaves_crds_behind_is_refused_until_confirmed() {
        let snap = health::Snapshot::parse(
            r#"{"items": [{"kind": "HelmChart", "metadata": {"name": "traefik", "namespace": "kube-system"}, "spec": {"version": "41.3.0"}}]}"#,
        )
        .unwrap();
        let traefik = |version: &str, applied: Option<&str>| crate::inventory::Traefik {
            version: version.into(),
            namespace: "ingress-system".into(),
            redirect_https: true,
            routes: vec![],
            chart_archive: None,
            node_selector: Default::default(),
            tolerations: vec![],
            crds_applied: applied.map(str::to_string),
        };
        let spec = |t| AddonsSpec {
            traefik: Some(t),
            ..Default::default()
        };
        assert!(crd_upgrades(&spec(traefik("41.3.0", None)), &snap).is_ok());
        let e = crd_upgrades(&spec(traefik("41.4.0", None)), &snap)
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 41.3.0 to 41.4.0"), "{e}");
        assert!(
            e.contains(
                "helm show crds traefik --repo https://traefik.github.io/charts --version 41.4.0"
            ),
            "{e}"
        );
        assert!(crd_upgrades(&spec(traefik("41.4.0", Some("41.4.0"))), &snap).is_ok());
        // Confirmed for another version: still refused.
        assert!(crd_upgrades(&spec(traefik("41.4.0", Some("41.3.1"))), &snap).is_err());
        // A fresh install gets crds/ from helm.
        assert!(crd_upgrades(&spec(traefik("41.4.0", None)), &health::Snapshot::default()).is_ok());
    }
}
