//! Phases `add-ons` and `add-on health`: remove what the inventory dropped, write what
//! differs to the manifests directory of every server, then wait until every add-on is
//! healthy, writing the files that need a chart's CRDs once that chart is (src/addons).
//!
//! The host facts hold every manifest's sha256 and the cluster facts the health objects, so a
//! converged cluster gets no step at all.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{Action, Applied, Cx, Group, Mode, Phase, Step};
use crate::addons::{health, AddonKind, ManifestFile, Stage, PREFIX};
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
                let chart = AddonKind::ALL.iter().any(|k| &k.chart_file() == file);
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
    let mut files = spec.files(cx.sealing_key.as_ref())?;
    // Sorted by name: the deploy controller's order, so the key Secret precedes its chart.
    files.sort_by(|a, b| a.file.cmp(&b.file));
    let desired: BTreeSet<String> = files.iter().map(|f| f.file.clone()).collect();
    let stale = stale_files(&servers, &desired);
    let mut record: Vec<String> = spec.extras.iter().map(|(n, _)| n.clone()).collect();
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

    // Health: the CRD-dependent files once what they need is healthy, then everything.
    let enabled = spec.enabled();
    let traefik_namespace = spec
        .traefik
        .as_ref()
        .map(|t| t.namespace.clone())
        .unwrap_or_default();
    let mut pending: Vec<(&ManifestFile, Vec<AddonKind>)> = files
        .iter()
        .filter_map(|m| match &m.stage {
            Stage::After(deps) if !missing_on(m).is_empty() => Some((m, deps.clone())),
            _ => None,
        })
        .collect();
    pending.sort_by_key(|(_, deps)| deps.iter().max().copied());
    let objects = cx.facts.cluster.objects.as_ref();
    let healthy = objects.is_some_and(|snap| {
        enabled
            .iter()
            .all(|k| health::evaluate(snap, *k, &traefik_namespace).healthy())
            && files.iter().all(|f| snap.file_applied(f))
    });
    if (!changed && pending.is_empty() && healthy) || (enabled.is_empty() && files.is_empty()) {
        return Ok(out);
    }
    let api = &cx.api;
    let mut steps = Vec::new();
    let mut waited: BTreeSet<AddonKind> = BTreeSet::new();
    for (m, deps) in &pending {
        let need: Vec<AddonKind> = deps
            .iter()
            .copied()
            .filter(|d| !waited.contains(d))
            .collect();
        if !need.is_empty() {
            waited.extend(need.iter().copied());
            steps.push(Step::api(
                api,
                Action::WaitAddons {
                    addons: deps.clone(),
                    traefik_namespace: traefik_namespace.clone(),
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
            addons: enabled,
            traefik_namespace,
            applied: files.iter().map(applied).collect(),
        },
    ));
    out.push(Phase::single("add-on health", "add-ons", steps));
    Ok(out)
}
