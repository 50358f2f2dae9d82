//! Controllers, run by the leader about once a second and right after every API write:
//! what kube-controller-manager, the scheduler, the kubelets, k3s's own controllers and
//! helm-controller would do to the objects, in a form fast enough for tests.

pub mod gc;
pub mod helm;
pub mod nodes;
pub mod workloads;

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};

use crate::kinds::{self, KindInfo};
use crate::server::Ctx;
use crate::store::State;

pub fn tick(
    st: &mut State,
    ctx: &Ctx,
    hbs: &HashMap<String, Instant>,
    leader_since: Instant,
    members_up: &[String],
) {
    nodes::lifecycle(st, hbs, leader_since, &ctx.node);
    nodes::etcd_members(st, &ctx.node, members_up);
    gc::run(st, &ctx.node);
    helm::run(st, ctx);
    workloads::run(st);
    gc::disruption(st);
}

pub fn builtin(kind: &str) -> KindInfo {
    kinds::builtin()
        .into_iter()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("{kind} is a built-in kind"))
}

pub fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// An ownerReference to `owner` as a controller sets it.
pub fn controller_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner.get("apiVersion").cloned().unwrap_or(json!("v1")),
        "kind": owner.get("kind").cloned().unwrap_or(json!("")),
        "name": crate::store::meta(owner, "name"), "uid": crate::store::meta(owner, "uid"),
        "controller": true, "blockOwnerDeletion": true})
}

/// The uid of an object's controller, if any.
pub fn controller_uid(o: &Value) -> Option<&str> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}
