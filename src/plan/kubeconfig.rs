//! Phase `kubeconfig`: the admin kubeconfig of the API server, its address and names
//! rewritten, 0600 beside the inventory, when it differs from what is there. k3s rewrites its
//! kubeconfig at every start: when the server (re)starts in this run, the executor reads it
//! afterwards; otherwise the copy read with the facts is current.

use std::path::PathBuf;

use super::{Action, Cx, Phase, Step};
use crate::facts::Facts;
use crate::inventory::Inventory;
use crate::k3s::server_url;
use crate::kubeconfig;

/// The step that writes the kubeconfig read from server `from`; `None` when the file beside
/// the inventory already says the same and nothing asks for more (`force`, a merge).
/// `fresh_read`: the server (re)starts first, so its kubeconfig is read afterwards.
pub fn step(
    inv: &Inventory,
    facts: &Facts,
    from: &str,
    fresh_read: bool,
    force: bool,
    merge: Option<PathBuf>,
) -> Option<Step> {
    let host = inv.node(from).map(|n| n.host.as_str()).unwrap_or(from);
    let url = server_url(inv.cluster.api_endpoint.as_deref().unwrap_or(host));
    let host = facts.host(from);
    let content = host
        .and_then(|f| f.kubeconfig.clone())
        .filter(|_| !fresh_read);
    let client_ca = host
        .and_then(|f| f.client_ca.clone())
        .filter(|_| !fresh_read);
    let ca_hash = super::secrets::ca_hash(inv, facts).ok().flatten();
    let pins = kubeconfig::Pins {
        ca_hash: ca_hash.as_deref(),
        client_ca: client_ca.as_deref().map(str::as_bytes),
    };
    let ours = content
        .as_deref()
        .and_then(|t| kubeconfig::rewrite(t, &pins, &inv.cluster.name, &url).ok());
    if !force && merge.is_none() && ours.is_some() && ours == facts.local.kubeconfig {
        return None;
    }
    Some(Step::local(Action::WriteKubeconfig {
        path: inv.kubeconfig_path(),
        name: inv.cluster.name.clone(),
        from: from.to_string(),
        url,
        content,
        client_ca,
        ca_hash,
        merge,
    }))
}

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let restarts = cx.hosts.get(&cx.api).is_some_and(|h| h.restarts());
    let step = step(cx.inv, cx.facts, &cx.api, restarts, false, None)?;
    Some(Phase::single("kubeconfig", "local", vec![step]))
}
