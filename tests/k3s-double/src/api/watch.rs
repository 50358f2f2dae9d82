//! Watches: a stream of `{"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": ...}` lines, from
//! a resourceVersion on (or the current state first when none is given), as the watch cache
//! serves them. Changes are found by comparing resourceVersions against the store, and
//! deletions come from its tombstones, so replication between servers cannot lose one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::select::{labels_of, FieldSelector, LabelSelector};
use super::table;
use crate::kinds::KindInfo;
use crate::net::server::{streamed, HttpResponse};
use crate::server::Server;
use crate::store::{rv_of, State};

pub struct Watch {
    pub ki: KindInfo,
    /// The version the client asked with (`apiVersion` of the objects it gets).
    pub version: String,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None`: start with the current state (ADDED for each); `Some(rv)`: changes after it.
    pub from: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub as_table: bool,
}

impl Watch {
    fn prefix(&self) -> String {
        match &self.ns {
            Some(ns) if self.ki.namespaced => format!("{}/{}/{ns}/", self.ki.group, self.ki.kind),
            _ => format!("{}/{}/", self.ki.group, self.ki.kind),
        }
    }

    fn selected(&self, o: &Value) -> bool {
        self.labels.matches(labels_of(o)) && self.fields.matches(o)
    }

    fn current(&self, st: &State) -> HashMap<String, Value> {
        let p = self.prefix();
        st.objects
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .filter(|(_, o)| self.selected(o))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }

    fn line(&self, ty: &str, mut o: Value) -> Bytes {
        o["apiVersion"] = json!(if self.ki.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.ki.group, self.version)
        });
        o["kind"] = json!(self.ki.kind);
        let object = if self.as_table && ty != "BOOKMARK" {
            table::table(&self.ki, &[o], None, false)
        } else {
            o
        };
        let mut s = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }
}

/// Starts a watch; its stream ends at the timeout or when the client goes away.
pub fn start(srv: Arc<Server>, w: Watch) -> HttpResponse {
    let (tx, resp) = streamed(200, "application/json");
    tokio::spawn(async move {
        let deadline = Instant::now() + w.timeout;
        let mut last_bookmark = Instant::now();
        let (mut known, first) = {
            let st = srv.state.lock().expect("state lock");
            let cur = w.current(&st);
            let mut evs: Vec<(u64, &'static str, Value)> = Vec::new();
            match w.from {
                None => {
                    for o in cur.values() {
                        evs.push((rv_of(o), "ADDED", o.clone()));
                    }
                }
                Some(from) => {
                    for (k, o) in &cur {
                        if rv_of(o) > from {
                            let created = st.created_rv.get(k).copied().unwrap_or(0);
                            evs.push((
                                rv_of(o),
                                if created > from { "ADDED" } else { "MODIFIED" },
                                o.clone(),
                            ));
                        }
                    }
                    let p = w.prefix();
                    for t in st
                        .tombstones
                        .iter()
                        .filter(|t| t.rv > from && t.key.starts_with(&p))
                    {
                        if w.selected(&t.obj) {
                            evs.push((t.rv, "DELETED", t.obj.clone()));
                        }
                    }
                }
            }
            evs.sort_by_key(|e| e.0);
            let known: HashMap<String, Value> = cur;
            (known, evs)
        };
        for (_, ty, o) in first {
            if tx.send(w.line(ty, o)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx.is_closed() || Instant::now() >= deadline {
                return;
            }
            let evs = {
                let st = srv.state.lock().expect("state lock");
                let cur = w.current(&st);
                let mut evs: Vec<(u64, &'static str, Value)> = Vec::new();
                for (k, o) in &cur {
                    match known.get(k) {
                        None => evs.push((rv_of(o), "ADDED", o.clone())),
                        Some(old) if rv_of(old) != rv_of(o) => {
                            evs.push((rv_of(o), "MODIFIED", o.clone()))
                        }
                        _ => {}
                    }
                }
                for (k, old) in &known {
                    if cur.contains_key(k) {
                        continue;
                    }
                    // Gone, or no longer selected: the last state the store has of it.
                    let last = st
                        .objects
                        .get(k)
                        .cloned()
                        .or_else(|| {
                            st.tombstones
                                .iter()
                                .rev()
                                .find(|t| t.key == *k)
                                .map(|t| t.obj.clone())
                        })
                        .unwrap_or_else(|| old.clone());
                    evs.push((rv_of(&last).max(rv_of(old)), "DELETED", last));
                }
                evs.sort_by_key(|e| e.0);
                known = cur;
                if evs.is_empty()
                    && w.bookmarks
                    && last_bookmark.elapsed() > Duration::from_secs(60)
                {
                    last_bookmark = Instant::now();
                    evs.push((
                        0,
                        "BOOKMARK",
                        json!({"metadata": {"resourceVersion": st.current_rv().to_string()}}),
                    ));
                }
                evs
            };
            for (_, ty, o) in evs {
                if tx.send(w.line(ty, o)).await.is_err() {
                    return;
                }
            }
        }
    });
    resp
}
