//! `k3s kubectl`: the client parses argv and reads files; the server runs the verb.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{self, Applied};
use crate::kinds::{self, KindInfo};
use crate::nodes;
use crate::server::Server;
use crate::store::{kind_of, meta, obj_key, State};
use crate::{http, util};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    pub verb: String,
    pub args: Vec<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: Option<String>,
    pub selector: Option<String>,
    pub files: Vec<(String, String)>,
    /// Other flags by long name ("true" for booleans).
    pub flags: BTreeMap<String, String>,
}

impl Request {
    fn flag(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(String::as_str)
    }
    fn bool(&self, k: &str) -> bool {
        matches!(self.flag(k), Some("true"))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Output {
    fn out(&mut self, s: impl AsRef<str>) {
        self.stdout.push_str(s.as_ref());
        self.stdout.push('\n');
    }
    fn err(&mut self, s: impl AsRef<str>) {
        self.stderr.push_str(s.as_ref());
        self.stderr.push('\n');
        self.code = 1;
    }
    fn fail(s: impl AsRef<str>) -> Output {
        let mut o = Output::default();
        o.err(s);
        o
    }
}

// ---------------------------------------------------------------- client

const VALUE_FLAGS: &[(&str, Option<char>)] = &[
    ("namespace", Some('n')),
    ("output", Some('o')),
    ("selector", Some('l')),
    ("filename", Some('f')),
    ("for", None),
    ("timeout", None),
    ("tail", None),
    ("raw", None),
    ("kubeconfig", None),
    ("grace-period", None),
    ("field-selector", None),
    ("container", Some('c')),
    ("context", None),
    ("request-timeout", None),
    ("since", None),
    ("pod-selector", None),
    ("chunk-size", None),
    ("field-manager", None),
];
const BOOL_FLAGS: &[(&str, Option<char>)] = &[
    ("all-namespaces", Some('A')),
    ("overwrite", None),
    ("ignore-daemonsets", None),
    ("delete-emptydir-data", None),
    ("delete-local-data", None),
    ("force", None),
    ("all", None),
    ("wait", None),
    ("no-headers", None),
    ("show-labels", None),
    ("ignore-not-found", None),
    ("disable-eviction", None),
    ("server-side", None),
    ("force-conflicts", None),
    ("recursive", Some('R')),
    ("insecure-skip-tls-verify", None),
    ("dry-run", None),
    ("validate", None),
    ("quiet", Some('q')),
];

pub fn parse_args(argv: &[String]) -> Result<Request, String> {
    let mut req = Request::default();
    let mut positional = Vec::new();
    let mut filenames = Vec::new();
    let mut i = 0;
    let set = |req: &mut Request, filenames: &mut Vec<String>, name: &str, v: String| match name {
        "namespace" => req.namespace = Some(v),
        "output" => req.output = Some(v),
        "selector" => req.selector = Some(v),
        "filename" => filenames.push(v),
        "all-namespaces" => req.all_namespaces = v == "true",
        other => {
            req.flags.insert(other.to_string(), v);
        }
    };
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            positional.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if VALUE_FLAGS.iter().any(|(n, _)| *n == name) {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let v = argv
                            .get(i)
                            .cloned()
                            .ok_or(format!("error: flag needs an argument: --{name}"))?;
                        i += 1;
                        v
                    }
                };
                set(&mut req, &mut filenames, name, v);
            } else if BOOL_FLAGS.iter().any(|(n, _)| *n == name) {
                let v = inline.unwrap_or_else(|| "true".into());
                let v = if name == "dry-run" && v != "none" && v != "false" {
                    "true".to_string()
                } else {
                    v
                };
                set(&mut req, &mut filenames, name, v);
            } else {
                return Err(format!("error: unknown flag: --{name}"));
            }
        } else if a.len() > 1 && a.starts_with('-') && !a.starts_with("--") {
            let c = a.chars().nth(1).unwrap_or('-');
            let rest = &a[1 + c.len_utf8()..];
            if let Some((name, _)) = VALUE_FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                let v = if let Some(v) = rest.strip_prefix('=') {
                    v.to_string()
                } else if !rest.is_empty() {
                    rest.to_string()
                } else {
                    let v = argv
                        .get(i)
                        .cloned()
                        .ok_or(format!("error: flag needs an argument: '{c}' in -{c}"))?;
                    i += 1;
                    v
                };
                set(&mut req, &mut filenames, name, v);
            } else if let Some((name, _)) = BOOL_FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                set(&mut req, &mut filenames, name, "true".into());
            } else {
                return Err(format!("error: unknown shorthand flag: '{c}' in {a}"));
            }
        } else {
            positional.push(a.clone());
        }
    }
    if positional.is_empty() {
        return Err("error: you must specify a command".into());
    }
    req.verb = positional.remove(0);
    req.args = positional;
    req.flags
        .insert("__filenames".into(), filenames.join("\u{1}"));
    Ok(req)
}

fn read_files(req: &mut Request) -> Result<(), String> {
    let names: Vec<String> = req
        .flags
        .remove("__filenames")
        .unwrap_or_default()
        .split('\u{1}')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for n in names {
        if n == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("error: {e}"))?;
            req.files.push(("STDIN".into(), s));
            continue;
        }
        let p = std::path::Path::new(&n);
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| format!("error: {e}"))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for e in entries {
                let s = std::fs::read_to_string(&e).map_err(|x| format!("error: {x}"))?;
                req.files.push((e.display().to_string(), s));
            }
            continue;
        }
        match std::fs::read_to_string(p) {
            Ok(s) => req.files.push((n.clone(), s)),
            Err(_) => return Err(format!("error: the path \"{n}\" does not exist")),
        }
    }
    Ok(())
}

fn kubeconfig_creds(path: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let server = v["clusters"][0]["cluster"]["server"].as_str()?.to_string();
    let key_b64 = v["users"][0]["user"]["client-key-data"].as_str()?;
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .ok()?;
    Some((server, crate::server::admin_bearer(&key)))
}

/// Entry point for `k3s kubectl ...` / `kubectl ...`.
pub fn main(argv: &[String]) -> i32 {
    let mut req = match parse_args(argv) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            if e.starts_with("error: unknown") {
                eprintln!("See 'kubectl --help' for usage.");
            }
            return 1;
        }
    };
    if req.verb == "version" && req.bool("client") {
        println!(
            "Client Version: {}\nKustomize Version: v5.7.1",
            crate::version()
        );
        return 0;
    }
    if let Err(e) = read_files(&mut req) {
        eprintln!("{e}");
        return 1;
    }
    let kc = req
        .flags
        .get("kubeconfig")
        .cloned()
        .or_else(|| std::env::var("KUBECONFIG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "/etc/rancher/k3s/k3s.yaml".into());
    let Some((server, bearer)) = kubeconfig_creds(&kc) else {
        eprintln!("The connection to the server localhost:8080 was refused - did you specify the right host or port?");
        return 1;
    };
    let addr = http::host_port(&server);
    let host = server.trim_start_matches("https://").trim_end_matches('/');
    let body = match serde_json::to_vec(&crate::common::Op::Kubectl { req }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let auth = format!("Bearer {bearer}");
    match http::call(
        &addr,
        "POST",
        "/v1/op",
        &[("Authorization", &auth)],
        &body,
        Duration::from_secs(3600),
    ) {
        Ok(r) if r.status == 200 => {
            let out: Output = serde_json::from_slice(&r.body).unwrap_or_default();
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            out.code
        }
        Ok(r) => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let msg = v.get("error").and_then(Value::as_str).unwrap_or("unknown");
            if r.status == 503 {
                eprintln!("Error from server: {msg}");
            } else {
                eprintln!("error: {msg}");
            }
            1
        }
        Err(_) => {
            eprintln!("The connection to the server {host} was refused - did you specify the right host or port?");
            1
        }
    }
}

// ---------------------------------------------------------------- server

/// Runs a kubectl request on the leader. `wait` polls without holding the lock.
pub fn serve(srv: &Server, req: &Request, origin: &str) -> Output {
    if req.verb == "wait" {
        return wait(srv, req);
    }
    if req.verb == "rollout" && req.args.first().map(String::as_str) == Some("status") {
        // kubectl watches until rolled out; --timeout=0 (the default) means no limit.
        let limit = req
            .flag("timeout")
            .and_then(parse_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(3600));
        let end = Instant::now() + limit;
        loop {
            let out = exec(&mut srv.state.lock().expect("state lock"), req, origin);
            if out.code == 0 || Instant::now() >= end || out.stderr.contains("NotFound") {
                return out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut st = srv.state.lock().expect("state lock");
    let out = exec(&mut st, req, origin);
    if st.dirty {
        // Let controllers react at once (Jobs for HelmCharts, pods, cordons) as real ones do within ms.
        srv.tick_controllers(&mut st);
    }
    srv.commit(&mut st);
    out
}

/// `--field-selector a.b=x,c!=y` on plain field paths.
fn field_selector_matches(sel: &str, obj: &Value) -> Result<bool, String> {
    for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, want, negate) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (p, v, false)
        } else {
            return Err(format!("error: invalid field selector: '{term}'"));
        };
        let ptr = format!("/{}", path.trim().replace('.', "/"));
        let got = match obj.pointer(&ptr) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        if (got == want.trim()) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `rollout status deployment/x`: answers once (the server-side wait lives in `wait`).
fn rollout_status(st: &State, req: &Request) -> Output {
    let tg = match targets(st, &req.args) {
        Ok(t) => t,
        Err(e) => return Output::fail(e),
    };
    let ns = ns_of(req);
    let mut o = Output::default();
    for (ki, names) in tg {
        for name in names {
            let Some(w) = st.get(&ki.group, &ki.kind, &ns, &name) else {
                o.err(not_found(&ki, &name));
                continue;
            };
            let (ready, want) = match ki.kind.as_str() {
                "DaemonSet" => (
                    n(w, "/status/numberReady"),
                    n(w, "/status/desiredNumberScheduled"),
                ),
                "Deployment" | "StatefulSet" => (
                    n(w, "/status/readyReplicas"),
                    w.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1),
                ),
                _ => {
                    o.err(format!(
                        "error: no status viewer has been implemented for {}",
                        ki.kind
                    ));
                    continue;
                }
            };
            let what = match ki.kind.as_str() {
                "DaemonSet" => "daemon set",
                "StatefulSet" => "statefulset",
                _ => "deployment",
            };
            if ready >= want && want > 0 {
                o.out(format!("{what} \"{name}\" successfully rolled out"));
            } else {
                o.err(format!("error: timed out waiting for the condition ({what} \"{name}\": {ready} of {want} updated replicas are available)"));
            }
        }
    }
    o
}

pub fn exec(st: &mut State, req: &Request, origin: &str) -> Output {
    match req.verb.as_str() {
        "get" => get(st, req),
        "apply" => apply(st, req, origin),
        "create" => create(st, req, origin),
        "delete" => delete(st, req, origin),
        "label" => label_or_annotate(st, req, origin, "labels"),
        "annotate" => label_or_annotate(st, req, origin, "annotations"),
        "taint" => taint(st, req, origin),
        "cordon" => cordon(st, req, origin, true),
        "uncordon" => cordon(st, req, origin, false),
        "drain" => drain(st, req, origin),
        "logs" => logs(st, req),
        "version" => {
            let v = crate::version();
            let mut o = Output::default();
            o.out(format!(
                "Client Version: {v}\nKustomize Version: v5.7.1\nServer Version: {v}"
            ));
            o
        }
        "cluster-info" => {
            let mut o = Output::default();
            o.out("Kubernetes control plane is running at https://127.0.0.1:6443");
            o
        }
        "rollout" if req.args.first().map(String::as_str) == Some("status") => {
            let mut r = req.clone();
            r.args.remove(0);
            rollout_status(st, &r)
        }
        "patch" | "edit" | "exec" | "rollout" | "scale" | "top" | "describe" | "replace"
        | "port-forward" | "run" | "expose" | "set" | "certificate" | "auth" | "proxy" | "cp"
        | "attach" | "explain" | "diff" | "kustomize" | "config" | "api-resources"
        | "api-versions" | "debug" | "events" => Output::fail(format!(
            "error: \"kubectl {}\" is not implemented by the k3s double",
            req.verb
        )),
        other => Output::fail(format!(
            "error: unknown command \"{other}\" for \"kubectl\"\nRun 'kubectl --help' for usage."
        )),
    }
}

fn ns_of(req: &Request) -> String {
    req.namespace.clone().unwrap_or_else(|| "default".into())
}

fn resolve(st: &State, name: &str) -> Result<KindInfo, String> {
    let all = st.kinds();
    kinds::resolve(&all, name)
        .cloned()
        .ok_or_else(|| format!("error: the server doesn't have a resource type \"{name}\""))
}

/// Splits `kind/name` and `kind name...` forms into (kind, names).
fn targets(st: &State, args: &[String]) -> Result<Vec<(KindInfo, Vec<String>)>, String> {
    let mut out: Vec<(KindInfo, Vec<String>)> = Vec::new();
    if args.is_empty() {
        return Ok(out);
    }
    if args.iter().any(|a| a.contains('/')) {
        for a in args {
            let Some((k, n)) = a.split_once('/') else {
                return Err("error: there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kubectl get resource/<resource_name>' instead of 'kubectl get resource resource/<resource_name>'".into());
            };
            let ki = resolve(st, k)?;
            match out.iter_mut().find(|(x, _)| *x == ki) {
                Some((_, v)) => v.push(n.to_string()),
                None => out.push((ki, vec![n.to_string()])),
            }
        }
        return Ok(out);
    }
    for k in args[0].split(',') {
        out.push((resolve(st, k)?, args[1..].to_vec()));
    }
    Ok(out)
}

fn not_found(ki: &KindInfo, name: &str) -> String {
    format!(
        "Error from server (NotFound): {} \"{name}\" not found",
        ki.resource()
    )
}

fn pretty_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return v.to_string();
    }
    String::from_utf8(buf).unwrap_or_default()
}

fn get(st: &mut State, req: &Request) -> Output {
    let mut o = Output::default();
    if let Some(raw) = req.flag("raw") {
        match raw {
            "/readyz" | "/livez" | "/healthz" => o.out("ok"),
            "/version" => o.out(pretty_json(&json!({"major": "1", "minor": "36", "gitVersion": crate::version(), "platform": "linux/amd64"}))),
            _ => return Output::fail("Error from server (NotFound): the server could not find the requested resource"),
        }
        o.stdout.pop();
        return o;
    }
    if req.args.is_empty() {
        return Output::fail("You must specify the type of resource to get. Use \"kubectl api-resources\" for a complete list of supported resources.\n\nerror: Required resource not specified.\nUse \"kubectl explain <resource>\" for a detailed description of that resource (e.g. kubectl explain pods).\nSee 'kubectl get -h' for help and examples");
    }
    let tg = match targets(st, &req.args) {
        Ok(t) => t,
        Err(e) => return Output::fail(e),
    };
    let ns = ns_of(req);
    let mut items: Vec<(KindInfo, Value)> = Vec::new();
    let mut single = false;
    for (ki, names) in &tg {
        if names.is_empty() {
            let list_ns = if !ki.namespaced || req.all_namespaces {
                None
            } else {
                Some(ns.as_str())
            };
            for obj in st.list(&ki.group, &ki.kind, list_ns) {
                if let Some(sel) = &req.selector {
                    if !api::selector_matches(sel, api::labels_of(obj)) {
                        continue;
                    }
                }
                if let Some(fs) = req.flag("field-selector") {
                    match field_selector_matches(fs, obj) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => return Output::fail(e),
                    }
                }
                items.push((ki.clone(), obj.clone()));
            }
        } else {
            single = tg.len() == 1 && names.len() == 1;
            for n in names {
                let obj_ns = if ki.namespaced { ns.as_str() } else { "" };
                match st.get(&ki.group, &ki.kind, obj_ns, n) {
                    Some(obj) => items.push((ki.clone(), obj.clone())),
                    None => {
                        if !req.bool("ignore-not-found") {
                            o.err(not_found(ki, n));
                        }
                    }
                }
            }
        }
    }
    let output = req.output.clone().unwrap_or_default();
    if output == "json" || output == "yaml" {
        let v = if single && items.len() == 1 {
            items[0].1.clone()
        } else if single {
            return o;
        } else {
            json!({"apiVersion": "v1", "items": items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), "kind": "List", "metadata": {"resourceVersion": ""}})
        };
        if output == "json" {
            o.stdout.push_str(&pretty_json(&v));
            o.stdout.push('\n');
        } else {
            o.stdout
                .push_str(&serde_yaml::to_string(&v).unwrap_or_default());
        }
        return o;
    }
    if output == "name" {
        for (ki, v) in &items {
            o.out(format!("{}/{}", ki.qualified(), meta(v, "name")));
        }
        return o;
    }
    if let Some(tpl) = output
        .strip_prefix("jsonpath=")
        .or_else(|| output.strip_prefix("jsonpath-as-json="))
    {
        let root = if single && items.len() == 1 {
            items[0].1.clone()
        } else {
            json!({"apiVersion": "v1", "items": items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), "kind": "List", "metadata": {"resourceVersion": ""}})
        };
        match jsonpath(&root, tpl) {
            Ok(s) => o.stdout.push_str(&s),
            Err(e) => return Output::fail(e),
        }
        return o;
    }
    if !output.is_empty() && output != "wide" {
        return Output::fail(format!("error: unable to match a printer suitable for the output format \"{output}\", allowed formats are: custom-columns,custom-columns-file,go-template,go-template-file,json,jsonpath,jsonpath-as-json,jsonpath-file,name,template,templatefile,wide,yaml"));
    }
    if items.is_empty() {
        if o.code == 0 {
            let namespaced = tg.iter().any(|(k, _)| k.namespaced);
            if namespaced && !req.all_namespaces {
                o.stderr
                    .push_str(&format!("No resources found in {ns} namespace.\n"));
            } else {
                o.stderr.push_str("No resources found\n");
            }
        }
        return o;
    }
    let show_ns = req.all_namespaces && tg.iter().any(|(k, _)| k.namespaced);
    let multi_kind = tg.len() > 1;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    for (ki, v) in &items {
        let (h, mut r) = table_row(ki, v, output == "wide");
        if multi_kind {
            r[0] = format!("{}/{}", ki.qualified(), r[0]);
        }
        if show_ns {
            r.insert(0, meta(v, "namespace").to_string());
        }
        if req.bool("show-labels") {
            let l = api::labels_of(v)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            r.push(if l.is_empty() { "<none>".into() } else { l });
        }
        if header.is_empty() {
            header = h.iter().map(|s| s.to_string()).collect();
            if show_ns {
                header.insert(0, "NAMESPACE".into());
            }
            if req.bool("show-labels") {
                header.push("LABELS".into());
            }
        }
        rows.push(r);
    }
    if !req.bool("no-headers") {
        rows.insert(0, header);
    }
    o.stdout.push_str(&format_table(&rows));
    o
}

fn format_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{:<width$}", c, width = w[i] + 3));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn node_roles(v: &Value) -> String {
    let mut roles: Vec<String> = api::labels_of(v)
        .map(|l| {
            l.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}
fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn table_row(ki: &KindInfo, v: &Value, wide: bool) -> (Vec<&'static str>, Vec<String>) {
    let name = meta(v, "name").to_string();
    let age = util::age(meta(v, "creationTimestamp"));
    match ki.kind.as_str() {
        "Node" => {
            let mut status = match nodes::ready_status(v) {
                "True" => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let mut r = vec![
                name,
                status,
                node_roles(v),
                age,
                s(v, "/status/nodeInfo/kubeletVersion").to_string(),
            ];
            if wide {
                r.push(s(v, "/status/addresses/0/address").to_string());
                r.push("<none>".into());
                r.push(s(v, "/status/nodeInfo/osImage").to_string());
                r.push(s(v, "/status/nodeInfo/kernelVersion").to_string());
                r.push(s(v, "/status/nodeInfo/containerRuntimeVersion").to_string());
                return (
                    vec![
                        "NAME",
                        "STATUS",
                        "ROLES",
                        "AGE",
                        "VERSION",
                        "INTERNAL-IP",
                        "EXTERNAL-IP",
                        "OS-IMAGE",
                        "KERNEL-VERSION",
                        "CONTAINER-RUNTIME",
                    ],
                    r,
                );
            }
            (vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"], r)
        }
        "Pod" => {
            let ready = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
                })
                .unwrap_or(false);
            let total = v
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(1)
                .max(1);
            let mut r = vec![
                name,
                format!("{}/{total}", if ready { total } else { 0 }),
                s(v, "/status/phase").to_string(),
                "0".into(),
                age,
            ];
            if wide {
                r.push(s(v, "/status/podIP").to_string());
                r.push(s(v, "/spec/nodeName").to_string());
                return (
                    vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
                    r,
                );
            }
            (vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"], r)
        }
        "Deployment" | "StatefulSet" => {
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ready = n(v, "/status/readyReplicas");
            if ki.kind == "StatefulSet" {
                return (
                    vec!["NAME", "READY", "AGE"],
                    vec![name, format!("{ready}/{want}"), age],
                );
            }
            (
                vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                vec![
                    name,
                    format!("{ready}/{want}"),
                    n(v, "/status/updatedReplicas").to_string(),
                    n(v, "/status/availableReplicas").to_string(),
                    age,
                ],
            )
        }
        "DaemonSet" => (
            vec![
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE",
            ],
            vec![
                name,
                n(v, "/status/desiredNumberScheduled").to_string(),
                n(v, "/status/currentNumberScheduled").to_string(),
                n(v, "/status/numberReady").to_string(),
                n(v, "/status/updatedNumberScheduled").to_string(),
                n(v, "/status/numberAvailable").to_string(),
                v.pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<none>".into()),
                age,
            ],
        ),
        "Job" => {
            let status = if n(v, "/status/succeeded") > 0 {
                "Complete"
            } else if n(v, "/status/failed") > 0 && v.pointer("/status/active").is_none() {
                "Failed"
            } else {
                "Running"
            };
            (
                vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
                vec![
                    name,
                    status.into(),
                    format!("{}/1", n(v, "/status/succeeded")),
                    "2s".into(),
                    age,
                ],
            )
        }
        "Namespace" => (
            vec!["NAME", "STATUS", "AGE"],
            vec![name, s(v, "/status/phase").to_string(), age],
        ),
        "Secret" => (
            vec!["NAME", "TYPE", "DATA", "AGE"],
            vec![
                name,
                s(v, "/type").to_string(),
                v.get("data")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .to_string(),
                age,
            ],
        ),
        "ConfigMap" => (
            vec!["NAME", "DATA", "AGE"],
            vec![
                name,
                v.get("data")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .to_string(),
                age,
            ],
        ),
        "CustomResourceDefinition" => (
            vec!["NAME", "CREATED AT"],
            vec![name, meta(v, "creationTimestamp").to_string()],
        ),
        "HelmChart" => (
            vec![
                "NAME",
                "JOB",
                "CHART",
                "TARGETNAMESPACE",
                "VERSION",
                "REPO",
                "HELMVERSION",
                "BOOTSTRAP",
            ],
            vec![
                name,
                s(v, "/status/jobName").to_string(),
                s(v, "/spec/chart").to_string(),
                s(v, "/spec/targetNamespace").to_string(),
                s(v, "/spec/version").to_string(),
                s(v, "/spec/repo").to_string(),
                s(v, "/spec/helmVersion").to_string(),
                v.pointer("/spec/bootstrap")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            ],
        ),
        "Addon" => (
            vec!["NAME", "SOURCE", "CHECKSUM"],
            vec![
                name,
                s(v, "/spec/source").to_string(),
                s(v, "/spec/checksum").to_string(),
            ],
        ),
        _ => (vec!["NAME", "AGE"], vec![name, age]),
    }
}

/// A small JSONPath: `{.a.b[0].c}`, `[*]`, `[?(@.type=="Ready")]`, `{range .items[*]}...{end}` not supported.
pub fn jsonpath(root: &Value, tpl: &str) -> Result<String, String> {
    let tpl = tpl.trim_matches('\'');
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or("error: error parsing jsonpath: unclosed action")?
            + start;
        let expr = &rest[start + 1..end];
        let vals = eval_path(root, expr.trim())?;
        let strs: Vec<String> = vals
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&strs.join(" "));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out.replace("\\n", "\n"))
}

fn eval_path(root: &Value, expr: &str) -> Result<Vec<Value>, String> {
    let expr = expr.strip_prefix('$').unwrap_or(expr);
    let mut cur = vec![root.clone()];
    let mut i = 0;
    let b = expr.as_bytes();
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let key = expr[start..i.min(b.len())].replace('\\', "");
                if key.is_empty() {
                    continue;
                }
                cur = cur.iter().filter_map(|v| v.get(&key).cloned()).collect();
            }
            b'[' => {
                let end = expr[i..]
                    .find(']')
                    .ok_or("error: error parsing jsonpath: unterminated array")?
                    + i;
                let inner = &expr[i + 1..end];
                i = end + 1;
                let mut next = vec![];
                for v in &cur {
                    let arr = v.as_array().cloned().unwrap_or_default();
                    if inner == "*" {
                        next.extend(arr);
                    } else if let Ok(idx) = inner.parse::<i64>() {
                        let idx = if idx < 0 { arr.len() as i64 + idx } else { idx };
                        if let Some(x) = arr.get(idx as usize) {
                            next.push(x.clone());
                        }
                    } else if let Some(f) =
                        inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                    {
                        let (path, want) = f
                            .split_once("==")
                            .ok_or("error: unsupported jsonpath filter")?;
                        let want = want.trim().trim_matches('"').trim_matches('\'');
                        for x in arr {
                            let got = eval_path(&x, &format!(".{}", path.trim()))?;
                            if got.iter().any(|g| g.as_str() == Some(want) || *g == want) {
                                next.push(x);
                            }
                        }
                    } else {
                        let key = inner.trim_matches('\'').trim_matches('"');
                        if let Some(x) = v.get(key) {
                            next.push(x.clone());
                        }
                    }
                }
                cur = next;
            }
            _ => i += 1,
        }
    }
    Ok(cur)
}

fn parse_docs(name: &str, text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(de)
            .map_err(|e| format!("error: error parsing {name}: {e}"))?;
        let j: Value =
            serde_json::to_value(v).map_err(|e| format!("error: error parsing {name}: {e}"))?;
        if j.is_null() {
            continue;
        }
        if kind_of(&j) == "List" {
            out.extend(
                j.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        } else {
            out.push(j);
        }
    }
    Ok(out)
}

pub fn docs_of(files: &[(String, String)]) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for (name, text) in files {
        for d in parse_docs(name, text)? {
            out.push((name.clone(), d));
        }
    }
    Ok(out)
}

fn apply(st: &mut State, req: &Request, origin: &str) -> Output {
    if req.files.is_empty() {
        return Output::fail("error: must specify one of -f and -k");
    }
    let docs = match docs_of(&req.files) {
        Ok(d) => d,
        Err(e) => return Output::fail(e),
    };
    let mut o = Output::default();
    for (src, d) in docs {
        let ki = match api::resolve_manifest(st, &d, &src) {
            Ok(k) => k,
            Err(e) => {
                o.err(e);
                continue;
            }
        };
        let ns = match meta(&d, "namespace") {
            "" => ns_of(req),
            x => {
                if let Some(want) = &req.namespace {
                    if want != x && ki.namespaced {
                        o.err(format!("error: the namespace from the provided object \"{x}\" does not match the namespace \"{want}\". You must pass '--namespace={x}' to perform this operation."));
                        continue;
                    }
                }
                x.to_string()
            }
        };
        if req.bool("dry-run") {
            o.out(format!(
                "{}/{} created (dry run)",
                ki.qualified(),
                meta(&d, "name")
            ));
            continue;
        }
        let name = meta(&d, "name").to_string();
        match api::apply_object(st, d, &ki, &ns) {
            Ok(r) => {
                o.out(format!("{}/{} {}", ki.qualified(), name, r.word()));
                if r != Applied::Unchanged {
                    st.event(origin, "apply", json!({"kind": ki.kind, "namespace": if ki.namespaced { ns.as_str() } else { "" }, "name": name, "result": r.word()}));
                }
            }
            Err(e) => o.err(format!(
                "Error from server (NotFound): error when creating \"{src}\": {e}"
            )),
        }
    }
    o
}

fn create(st: &mut State, req: &Request, origin: &str) -> Output {
    if let (Some(k), Some(name)) = (req.args.first(), req.args.get(1)) {
        if k == "namespace" || k == "ns" {
            if st.namespace_exists(name) {
                return Output::fail(format!(
                    "Error from server (AlreadyExists): namespaces \"{name}\" already exists"
                ));
            }
            st.ensure_namespace(name);
            st.event(
                origin,
                "apply",
                json!({"kind": "Namespace", "namespace": "", "name": name, "result": "created"}),
            );
            let mut o = Output::default();
            o.out(format!("namespace/{name} created"));
            return o;
        }
    }
    if req.files.is_empty() {
        return Output::fail("error: the k3s double supports only `kubectl create namespace NAME` and `kubectl create -f`");
    }
    let docs = match docs_of(&req.files) {
        Ok(d) => d,
        Err(e) => return Output::fail(e),
    };
    let mut o = Output::default();
    for (src, d) in docs {
        let ki = match api::resolve_manifest(st, &d, &src) {
            Ok(k) => k,
            Err(e) => {
                o.err(e);
                continue;
            }
        };
        let ns = match meta(&d, "namespace") {
            "" => ns_of(req),
            x => x.to_string(),
        };
        let name = meta(&d, "name").to_string();
        if st
            .get(
                &ki.group,
                &ki.kind,
                if ki.namespaced { &ns } else { "" },
                &name,
            )
            .is_some()
        {
            o.err(format!("Error from server (AlreadyExists): error when creating \"{src}\": {} \"{name}\" already exists", ki.resource()));
            continue;
        }
        match api::apply_object(st, d, &ki, &ns) {
            Ok(_) => {
                o.out(format!("{}/{} created", ki.qualified(), name));
                st.event(
                    origin,
                    "apply",
                    json!({"kind": ki.kind, "namespace": ns, "name": name, "result": "created"}),
                );
            }
            Err(e) => o.err(format!(
                "Error from server (NotFound): error when creating \"{src}\": {e}"
            )),
        }
    }
    o
}

fn delete(st: &mut State, req: &Request, origin: &str) -> Output {
    let mut o = Output::default();
    let ignore = req.bool("ignore-not-found");
    let mut keys: Vec<(KindInfo, String, String, Option<String>)> = Vec::new();
    if !req.files.is_empty() {
        let docs = match docs_of(&req.files) {
            Ok(d) => d,
            Err(e) => return Output::fail(e),
        };
        for (src, d) in docs {
            match api::resolve_manifest(st, &d, &src) {
                Ok(ki) => {
                    let ns = match meta(&d, "namespace") {
                        "" => ns_of(req),
                        x => x.to_string(),
                    };
                    keys.push((ki, ns, meta(&d, "name").to_string(), Some(src)));
                }
                Err(e) => o.err(e),
            }
        }
    } else {
        let tg = match targets(st, &req.args) {
            Ok(t) => t,
            Err(e) => return Output::fail(e),
        };
        if tg.is_empty() {
            return Output::fail("error: You must provide one or more resources by argument or filename.\nExample resource specifications include:\n   '-f rsrc.yaml'\n   '--filename=rsrc.json'\n   '<resource> <name>'\n   '<resource>'");
        }
        for (ki, names) in tg {
            if names.is_empty() {
                if !req.bool("all") && req.selector.is_none() {
                    return Output::fail(
                        "error: resource(s) were provided, but no name was specified",
                    );
                }
                let ns = ns_of(req);
                let list_ns = if ki.namespaced {
                    Some(ns.as_str())
                } else {
                    None
                };
                for obj in st.list(&ki.group, &ki.kind, list_ns) {
                    if let Some(sel) = &req.selector {
                        if !api::selector_matches(sel, api::labels_of(obj)) {
                            continue;
                        }
                    }
                    keys.push((
                        ki.clone(),
                        meta(obj, "namespace").to_string(),
                        meta(obj, "name").to_string(),
                        None,
                    ));
                }
            }
            for n in names {
                keys.push((ki.clone(), ns_of(req), n, None));
            }
        }
    }
    for (ki, ns, name, src) in keys {
        let key = obj_key(
            &ki.group,
            &ki.kind,
            if ki.namespaced { &ns } else { "" },
            &name,
        );
        match api::delete_object(st, &key, origin) {
            Some(_) => {
                o.out(format!("{} \"{name}\" deleted", ki.qualified()));
                if ki.kind != "Node" {
                    st.event(origin, "delete", json!({"kind": ki.kind, "namespace": if ki.namespaced { ns.as_str() } else { "" }, "name": name}));
                }
            }
            None if ignore => {}
            None => match src {
                Some(src) => o.err(format!("Error from server (NotFound): error when deleting \"{src}\": {} \"{name}\" not found", ki.resource())),
                None => o.err(not_found(&ki, &name)),
            },
        }
    }
    o
}

fn label_or_annotate(st: &mut State, req: &Request, origin: &str, field: &str) -> Output {
    let verb = if field == "labels" {
        "label"
    } else {
        "annotate"
    };
    let mut objs: Vec<String> = Vec::new();
    let mut changes: Vec<String> = Vec::new();
    let mut args = req.args.clone();
    // `label node N k=v` or `label node/N k=v`
    let (ki, names) = if args.first().map(|a| a.contains('/')).unwrap_or(false) {
        let a = args.remove(0);
        let (k, n) = a.split_once('/').unwrap_or((&a, ""));
        match resolve(st, k) {
            Ok(ki) => (ki, vec![n.to_string()]),
            Err(e) => return Output::fail(e),
        }
    } else {
        if args.is_empty() {
            return Output::fail("error: one or more resources must be specified as <resource> <name> or <resource>/<name>");
        }
        let k = args.remove(0);
        let ki = match resolve(st, &k) {
            Ok(ki) => ki,
            Err(e) => return Output::fail(e),
        };
        let mut names = vec![];
        while let Some(a) = args.first() {
            if a.contains('=') || a.ends_with('-') {
                break;
            }
            names.push(args.remove(0));
        }
        (ki, names)
    };
    for a in args {
        changes.push(a);
    }
    if changes.is_empty() {
        return Output::fail(format!(
            "error: at least one {} update is required",
            if verb == "label" {
                "label"
            } else {
                "annotation"
            }
        ));
    }
    let ns = ns_of(req);
    let mut o = Output::default();
    for name in names {
        let obj_ns = if ki.namespaced { ns.as_str() } else { "" };
        let Some(obj) = st.get(&ki.group, &ki.kind, obj_ns, &name).cloned() else {
            o.err(not_found(&ki, &name));
            continue;
        };
        let mut map = obj
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let before = map.clone();
        let mut set = serde_json::Map::new();
        let mut removed = vec![];
        for c in &changes {
            if let Some(k) = c.strip_suffix('-') {
                if !c.contains('=') {
                    if map.remove(k).is_some() {
                        removed.push(k.to_string());
                    } else if verb == "label" {
                        o.stderr.push_str(&format!("label \"{k}\" not found.\n"));
                    }
                    continue;
                }
            }
            let Some((k, v)) = c.split_once('=') else {
                return Output::fail(format!("error: invalid {verb} spec: {c}"));
            };
            if verb == "label" && (v.contains(' ') || v.len() > 63) {
                return Output::fail(format!("error: invalid label value: \"{c}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
            }
            if let Some(cur) = map.get(k).and_then(Value::as_str) {
                if cur != v && !req.bool("overwrite") {
                    return Output::fail(format!(
                        "error: '{k}' already has a value ({cur}), and --overwrite is false"
                    ));
                }
            }
            map.insert(k.to_string(), json!(v));
            set.insert(k.to_string(), json!(v));
        }
        let changed = map != before;
        if changed {
            if let Some(target) = st.get_mut(&ki.group, &ki.kind, obj_ns, &name) {
                target["metadata"][field] = Value::Object(map);
            }
            let rv = st.bump_rv();
            if let Some(target) = st.get_mut(&ki.group, &ki.kind, obj_ns, &name) {
                target["metadata"]["resourceVersion"] = json!(rv);
            }
            st.event(origin, verb, json!({"kind": ki.kind, "namespace": obj_ns, "name": name, "set": set, "removed": removed}));
            let past = if verb == "label" {
                if set.is_empty() {
                    "unlabeled"
                } else {
                    "labeled"
                }
            } else {
                "annotated"
            };
            o.out(format!("{}/{name} {past}", ki.qualified()));
        } else if verb == "label" {
            o.out(format!("{}/{name} not labeled", ki.qualified()));
        } else {
            o.out(format!("{}/{name} annotated", ki.qualified()));
        }
        objs.push(name);
    }
    o
}

fn taint(st: &mut State, req: &Request, origin: &str) -> Output {
    let mut args = req.args.clone();
    if args.is_empty() {
        return Output::fail("error: at least one taint update is required");
    }
    let first = args.remove(0);
    let name = if let Some((k, n)) = first.split_once('/') {
        if !matches!(k, "node" | "nodes" | "no") {
            return Output::fail(format!(
                "error: invalid resource type {k}, only node types are supported"
            ));
        }
        n.to_string()
    } else {
        if !matches!(first.as_str(), "node" | "nodes" | "no") {
            return Output::fail(format!(
                "error: invalid resource type {first}, only node types are supported"
            ));
        }
        if args.is_empty() {
            return Output::fail("error: at least one taint update is required");
        }
        args.remove(0)
    };
    if args.is_empty() {
        return Output::fail("error: at least one taint update is required");
    }
    let Some(node) = st.get("", "Node", "", &name).cloned() else {
        return Output::fail(format!(
            "Error from server (NotFound): nodes \"{name}\" not found"
        ));
    };
    let mut taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = false;
    let mut removed = false;
    let mut modified = false;
    for a in &args {
        if let Some(spec) = a.strip_suffix('-') {
            // k:Effect- | k=v:Effect- | k-
            let (kv, effect) = match spec.rsplit_once(':') {
                Some((kv, e)) => (kv, Some(e)),
                None => (spec, None),
            };
            let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            let before = taints.len();
            taints.retain(|t| {
                !(s(t, "/key") == key && effect.map(|e| s(t, "/effect") == e).unwrap_or(true))
            });
            if taints.len() == before {
                return Output::fail(format!("error: taint \"{spec}\" not found"));
            }
            removed = true;
            continue;
        }
        let Some(t) = nodes::parse_taint(a) else {
            return Output::fail(format!(
                "error: invalid taint spec: {a}, unknown taint effect or format"
            ));
        };
        if let Some(pos) = taints
            .iter()
            .position(|x| s(x, "/key") == s(&t, "/key") && s(x, "/effect") == s(&t, "/effect"))
        {
            if !req.bool("overwrite") {
                return Output::fail(format!("error: node {name} already has {} taint(s) with same effect(s) and --overwrite is false", s(&t, "/key")));
            }
            taints[pos] = t;
            modified = true;
        } else {
            taints.push(t);
            added = true;
        }
    }
    if let Some(n) = st.get_mut("", "Node", "", &name) {
        if taints.is_empty() {
            if let Some(spec) = n.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("taints");
            }
        } else {
            n["spec"]["taints"] = json!(taints);
        }
    }
    st.event(
        origin,
        "taint",
        json!({"name": name, "changes": args, "taints": taints}),
    );
    let word = if modified || (added && removed) {
        "modified"
    } else if removed {
        "untainted"
    } else {
        "tainted"
    };
    let mut o = Output::default();
    o.out(format!("node/{name} {word}"));
    o
}

fn node_names(req: &Request) -> Vec<String> {
    req.args
        .iter()
        .flat_map(|a| match a.split_once('/') {
            Some((_, n)) => vec![n.to_string()],
            None if matches!(a.as_str(), "node" | "nodes" | "no") => vec![],
            None => vec![a.clone()],
        })
        .collect()
}

fn set_unschedulable(st: &mut State, name: &str, on: bool) -> bool {
    let Some(n) = st.get_mut("", "Node", "", name) else {
        return false;
    };
    let cur = n
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if cur == on {
        return false;
    }
    if on {
        n["spec"]["unschedulable"] = json!(true);
        let mut taints = n
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": util::now_rfc3339()}));
        n["spec"]["taints"] = json!(taints);
    } else {
        if let Some(spec) = n.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("unschedulable");
        }
        let taints: Vec<Value> = n
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| s(t, "/key") != "node.kubernetes.io/unschedulable")
            .collect();
        if taints.is_empty() {
            if let Some(spec) = n.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("taints");
            }
        } else {
            n["spec"]["taints"] = json!(taints);
        }
    }
    true
}

fn cordon(st: &mut State, req: &Request, origin: &str, on: bool) -> Output {
    let names = node_names(req);
    if names.is_empty() {
        return Output::fail("error: resource(s) were provided, but no name was specified");
    }
    let mut o = Output::default();
    for name in names {
        if st.get("", "Node", "", &name).is_none() {
            o.err(format!(
                "Error from server (NotFound): nodes \"{name}\" not found"
            ));
            continue;
        }
        let word = if on { "cordoned" } else { "uncordoned" };
        if set_unschedulable(st, &name, on) {
            st.event(
                origin,
                if on { "cordon" } else { "uncordon" },
                json!({"name": name}),
            );
            o.out(format!("node/{name} {word}"));
        } else {
            o.out(format!("node/{name} already {word}"));
        }
    }
    o
}

fn drain(st: &mut State, req: &Request, origin: &str) -> Output {
    let names = node_names(req);
    let mut o = Output::default();
    for name in names {
        if st.get("", "Node", "", &name).is_none() {
            o.err(format!(
                "Error from server (NotFound): nodes \"{name}\" not found"
            ));
            continue;
        }
        if set_unschedulable(st, &name, true) {
            st.event(origin, "cordon", json!({"name": name}));
            o.out(format!("node/{name} cordoned"));
        } else {
            o.out(format!("node/{name} already cordoned"));
        }
        let plan = plan_drain(
            st,
            &name,
            req.bool("ignore-daemonsets"),
            req.bool("delete-emptydir-data") || req.bool("delete-local-data"),
            req.bool("force"),
        );
        match plan {
            Err(errs) => {
                o.err(format!("error: unable to drain node \"{name}\" due to error: {}, continuing command...\nThere are pending nodes to be drained:\n {name}\n{}", errs.join(", "), errs.join("\n")));
            }
            Ok((evict, ignored)) => {
                if !ignored.is_empty() {
                    o.stderr.push_str(&format!(
                        "Warning: ignoring DaemonSet-managed Pods: {}\n",
                        ignored.join(", ")
                    ));
                }
                for (key, ns, pod) in &evict {
                    o.out(format!("evicting pod {ns}/{pod}"));
                    st.delete(key);
                    st.event(
                        origin,
                        "evict",
                        json!({"node": name, "namespace": ns, "pod": pod}),
                    );
                }
                for (_, _, pod) in &evict {
                    o.out(format!("pod/{pod} evicted"));
                }
                st.event(
                    origin,
                    "drain",
                    json!({"name": name, "evicted": evict.len()}),
                );
                o.out(format!("node/{name} drained"));
            }
        }
    }
    o
}

/// Which pods a drain evicts, or kubectl's refusals. Ok((evict (key, ns, name), ignored ds pods)).
#[allow(clippy::type_complexity)]
pub fn plan_drain(
    st: &State,
    node: &str,
    ignore_ds: bool,
    emptydir: bool,
    force: bool,
) -> Result<(Vec<(String, String, String)>, Vec<String>), Vec<String>> {
    let mut ds = vec![];
    let mut local = vec![];
    let mut unmanaged = vec![];
    let mut evict = vec![];
    for (k, p) in &st.objects {
        if kind_of(p) != "Pod" || s(p, "/spec/nodeName") != node {
            continue;
        }
        let id = format!("{}/{}", meta(p, "namespace"), meta(p, "name"));
        let owner = s(p, "/metadata/ownerReferences/0/kind");
        if owner == "DaemonSet" {
            ds.push(id);
            continue;
        }
        if owner.is_empty() && !force {
            unmanaged.push(id.clone());
        }
        let has_emptydir = p
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .map(|v| v.iter().any(|v| v.get("emptyDir").is_some()))
            .unwrap_or(false);
        if has_emptydir && !emptydir {
            local.push(id.clone());
        }
        evict.push((
            k.clone(),
            meta(p, "namespace").to_string(),
            meta(p, "name").to_string(),
        ));
    }
    let mut errs = vec![];
    if !unmanaged.is_empty() {
        errs.push(format!(
            "cannot delete Pods that declare no controller (use --force to override): {}",
            unmanaged.join(", ")
        ));
    }
    if !ds.is_empty() && !ignore_ds {
        errs.push(format!(
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
            ds.join(", ")
        ));
    }
    if !local.is_empty() {
        errs.push(format!(
            "cannot delete Pods with local storage (use --delete-emptydir-data to override): {}",
            local.join(", ")
        ));
    }
    if errs.is_empty() {
        Ok((evict, ds))
    } else {
        Err(errs)
    }
}

fn logs(st: &State, req: &Request) -> Output {
    let Some(target) = req.args.first() else {
        return Output::fail("error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\nPOD or TYPE/NAME is a required argument for the logs command\nSee 'kubectl logs -h' for help and examples");
    };
    let ns = ns_of(req);
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let key = match kind {
        "job" | "jobs" | "job.batch" | "jobs.batch" => {
            if st.get("batch", "Job", &ns, name).is_none() {
                return Output::fail(format!("error: error from server (NotFound): jobs.batch \"{name}\" not found in namespace \"{ns}\""));
            }
            format!("{ns}/{name}")
        }
        "pod" | "pods" | "po" => {
            if st.get("", "Pod", &ns, name).is_none() {
                return Output::fail(format!("error: error from server (NotFound): pods \"{name}\" not found in namespace \"{ns}\""));
            }
            format!("{ns}/{name}")
        }
        "deployment" | "deploy" | "deployments" | "daemonset" | "ds" | "statefulset" | "sts" => {
            let pod = st
                .list("", "Pod", Some(&ns))
                .into_iter()
                .find(|p| s(p, "/metadata/ownerReferences/0/name").starts_with(name));
            match pod {
                Some(p) => format!("{ns}/{}", meta(p, "name")),
                None => return Output::fail("error: timed out waiting for the condition"),
            }
        }
        other => {
            return Output::fail(format!(
                "error: the server doesn't have a resource type \"{other}\""
            ))
        }
    };
    let text = st.logs.get(&key).cloned().unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(t) = req.flag("tail").and_then(|t| t.parse::<i64>().ok()) {
        if t >= 0 && (t as usize) < lines.len() {
            lines = lines[lines.len() - t as usize..].to_vec();
        }
    }
    let mut o = Output::default();
    for l in lines {
        o.out(l);
    }
    o
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            }
        };
        total += v * unit;
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_millis((total * 1000.0) as u64))
}

fn condition_met(obj: &Value, cond: &str, want: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter().any(|c| {
                s(c, "/type").eq_ignore_ascii_case(cond)
                    && s(c, "/status").eq_ignore_ascii_case(want)
            })
        })
        .unwrap_or(false)
}

fn wait(srv: &Server, req: &Request) -> Output {
    let timeout = req
        .flag("timeout")
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(30));
    let Some(forv) = req.flag("for") else {
        return Output::fail("error: --for must be specified");
    };
    enum For {
        Cond(String, String),
        Delete,
    }
    let f = if forv == "delete" {
        For::Delete
    } else if let Some(c) = forv.strip_prefix("condition=") {
        let (c, v) = c.split_once('=').unwrap_or((c, "True"));
        For::Cond(c.to_string(), v.to_string())
    } else {
        return Output::fail(format!("error: unrecognized condition: \"{forv}\""));
    };
    let ns = ns_of(req);
    let tg = {
        let st = srv.state.lock().expect("state lock");
        match targets(&st, &req.args) {
            Ok(t) => t,
            Err(e) => return Output::fail(e),
        }
    };
    let mut objs: Vec<(KindInfo, String)> = Vec::new();
    {
        let st = srv.state.lock().expect("state lock");
        for (ki, names) in &tg {
            if names.is_empty() {
                if !req.bool("all") && req.selector.is_none() {
                    return Output::fail(
                        "error: resource(s) were provided, but no name was specified",
                    );
                }
                let list_ns = if ki.namespaced {
                    Some(ns.as_str())
                } else {
                    None
                };
                for o in st.list(&ki.group, &ki.kind, list_ns) {
                    if req
                        .selector
                        .as_ref()
                        .map(|sel| api::selector_matches(sel, api::labels_of(o)))
                        .unwrap_or(true)
                    {
                        objs.push((ki.clone(), meta(o, "name").to_string()));
                    }
                }
            }
            for n in names {
                objs.push((ki.clone(), n.clone()));
            }
        }
    }
    if objs.is_empty() {
        return Output::fail("error: no matching resources found");
    }
    let deadline = Instant::now() + timeout;
    let mut o = Output::default();
    for (ki, name) in objs {
        let obj_ns = if ki.namespaced {
            ns.clone()
        } else {
            String::new()
        };
        loop {
            let found = {
                let st = srv.state.lock().expect("state lock");
                st.get(&ki.group, &ki.kind, &obj_ns, &name).cloned()
            };
            match (&f, &found) {
                (For::Delete, None) => {
                    o.out(format!("{}/{name} condition met", ki.qualified()));
                    break;
                }
                (For::Cond(..), None) => {
                    o.err(not_found(&ki, &name));
                    return o;
                }
                (For::Cond(c, v), Some(obj)) if condition_met(obj, c, v) => {
                    o.out(format!("{}/{name} condition met", ki.qualified()));
                    break;
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                o.err(format!(
                    "error: timed out waiting for the condition on {}/{name}",
                    ki.plural
                ));
                return o;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_kubectl_forms() {
        let r = parse_args(&a(&["label", "node", "w1", "--overwrite", "a=b", "old-"])).unwrap();
        assert_eq!(r.verb, "label");
        assert_eq!(r.args, a(&["node", "w1", "a=b", "old-"]));
        assert!(r.bool("overwrite"));
        let r = parse_args(&a(&[
            "get",
            "jobs",
            "-n",
            "kube-system",
            "-o",
            "json",
            "-A",
        ]))
        .unwrap();
        assert_eq!(r.namespace.as_deref(), Some("kube-system"));
        assert_eq!(r.output.as_deref(), Some("json"));
        assert!(r.all_namespaces);
        let r = parse_args(&a(&[
            "wait",
            "--for=condition=complete",
            "job/x",
            "--timeout=60s",
            "-nkube-system",
        ]))
        .unwrap();
        assert_eq!(r.flag("for"), Some("condition=complete"));
        assert_eq!(r.namespace.as_deref(), Some("kube-system"));
        assert!(parse_args(&a(&["get", "--bogus"]))
            .unwrap_err()
            .contains("unknown flag: --bogus"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    }

    #[test]
    fn jsonpath_basics() {
        let v = json!({"items":[{"metadata":{"name":"a"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},{"metadata":{"name":"b"}}]});
        assert_eq!(jsonpath(&v, "{.items[*].metadata.name}").unwrap(), "a b");
        assert_eq!(
            jsonpath(
                &v,
                "{.items[0].status.conditions[?(@.type==\"Ready\")].status}"
            )
            .unwrap(),
            "True"
        );
    }

    fn state_with_nodes() -> State {
        let mut st = State::default();
        for ns in ["default", "kube-system"] {
            st.ensure_namespace(ns);
        }
        for n in ["w1", "w2"] {
            let info = nodes::NodeInfo {
                name: n.into(),
                password: "p".into(),
                role: "agent".into(),
                internal_ip: "10.0.0.1".into(),
                version: "v1".into(),
                ..Default::default()
            };
            nodes::register(&mut st, &info, n).unwrap();
        }
        st
    }

    #[test]
    fn label_overwrite_rules() {
        let mut st = state_with_nodes();
        let run = |st: &mut State, args: &[&str]| exec(st, &parse_args(&a(args)).unwrap(), "t");
        let o = run(&mut st, &["label", "node", "w1", "tier=a"]);
        assert_eq!(o.stdout, "node/w1 labeled\n");
        let o = run(&mut st, &["label", "node", "w1", "tier=b"]);
        assert_eq!(o.code, 1);
        assert_eq!(
            o.stderr,
            "error: 'tier' already has a value (a), and --overwrite is false\n"
        );
        let o = run(&mut st, &["label", "node", "w1", "tier=b", "--overwrite"]);
        assert_eq!(o.stdout, "node/w1 labeled\n");
        let o = run(&mut st, &["label", "node", "w1", "tier-"]);
        assert_eq!(o.stdout, "node/w1 unlabeled\n");
        let o = run(&mut st, &["delete", "node", "nope"]);
        assert_eq!(
            o.stderr,
            "Error from server (NotFound): nodes \"nope\" not found\n"
        );
        let o = run(&mut st, &["taint", "node", "w1", "k=v:NoSchedule"]);
        assert_eq!(o.stdout, "node/w1 tainted\n");
        let o = run(&mut st, &["taint", "node", "w1", "k:NoSchedule-"]);
        assert_eq!(o.stdout, "node/w1 untainted\n");
        let o = run(&mut st, &["frobnicate"]);
        assert!(o
            .stderr
            .starts_with("error: unknown command \"frobnicate\" for \"kubectl\""));
        let o = run(&mut st, &["get", "widgets"]);
        assert_eq!(
            o.stderr,
            "error: the server doesn't have a resource type \"widgets\"\n"
        );
        let o = run(&mut st, &["get", "nodes", "-o", "name"]);
        assert_eq!(o.stdout, "node/w1\nnode/w2\n");
    }

    #[test]
    fn drain_plan_refuses_daemonset_pods() {
        let mut st = state_with_nodes();
        st.put(json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"ds-abcde","namespace":"kube-system","ownerReferences":[{"kind":"DaemonSet","name":"ds","uid":"x"}]},"spec":{"nodeName":"w1"}}));
        st.put(json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default","ownerReferences":[{"kind":"ReplicaSet","name":"web","uid":"y"}]},"spec":{"nodeName":"w1"}}));
        let e = plan_drain(&st, "w1", false, false, false).unwrap_err();
        assert_eq!(e, vec!["cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/ds-abcde"]);
        let (evict, ignored) = plan_drain(&st, "w1", true, false, false).unwrap();
        assert_eq!(evict.len(), 1);
        assert_eq!(ignored, vec!["kube-system/ds-abcde"]);
    }

    #[test]
    fn field_selectors() {
        let p = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running"}});
        assert!(field_selector_matches("spec.nodeName=w1", &p).unwrap());
        assert!(!field_selector_matches("spec.nodeName=w2", &p).unwrap());
        assert!(field_selector_matches("status.phase!=Pending,metadata.name==a", &p).unwrap());
    }

    #[test]
    fn apply_then_get_json_list_shape() {
        let mut st = state_with_nodes();
        let mut req = parse_args(&a(&["apply", "-f", "x"])).unwrap();
        req.flags.remove("__filenames");
        req.files = vec![("x.yaml".into(), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\napiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: traefik\n  namespace: kube-system\nspec:\n  chart: traefik\n".into())];
        let o = exec(&mut st, &req, "t");
        assert_eq!(
            o.stdout,
            "namespace/prod created\nhelmchart.helm.cattle.io/traefik created\n"
        );
        let o = exec(&mut st, &req, "t");
        assert_eq!(
            o.stdout,
            "namespace/prod unchanged\nhelmchart.helm.cattle.io/traefik unchanged\n"
        );
        let o = exec(
            &mut st,
            &parse_args(&a(&["get", "nodes", "-o", "json"])).unwrap(),
            "t",
        );
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["metadata"], json!({"resourceVersion": ""}));
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
        let mut req = parse_args(&a(&["apply", "-f", "x"])).unwrap();
        req.flags.remove("__filenames");
        req.files = vec![(
            "x.yaml".into(),
            "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: le\n".into(),
        )];
        let o = exec(&mut st, &req, "t");
        assert_eq!(o.code, 1);
        assert!(
            o.stderr.contains(
                "no matches for kind \"ClusterIssuer\" in version \"cert-manager.io/v1\""
            ),
            "{}",
            o.stderr
        );
    }
}
