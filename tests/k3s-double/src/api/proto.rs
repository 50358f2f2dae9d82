//! Protobuf request bodies. client-go's generated clients send built-in objects as
//! `application/vnd.kubernetes.protobuf` (client-go `rest/client.go`: "generated clients
//! accessing built-in kube resources are forced to protobuf"), so kubectl's `create namespace`
//! and drain's evictions arrive that way. The envelope is `k8s\0` + `runtime.Unknown`
//! (apimachinery `pkg/runtime/serializer/protobuf`); the messages decoded are the ones those
//! commands send, with field numbers from k8s.io/api and apimachinery `generated.proto`.

use base64::Engine;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    Bytes,
    Msg(&'static str),
    MapStrStr,
    MapStrBytes,
    RepStr,
    RepMsg(&'static str),
}

fn schema(msg: &str) -> Option<&'static [(u64, &'static str, F)]> {
    use F::*;
    Some(match msg {
        "Unknown" => &[
            (1, "typeMeta", Msg("TypeMeta")),
            (2, "raw", Bytes),
            (3, "contentEncoding", Str),
            (4, "contentType", Str),
        ],
        "TypeMeta" => &[(1, "apiVersion", Str), (2, "kind", Str)],
        "ObjectMeta" => &[
            (1, "name", Str),
            (2, "generateName", Str),
            (3, "namespace", Str),
            (5, "uid", Str),
            (6, "resourceVersion", Str),
            (7, "generation", Int),
            (10, "deletionGracePeriodSeconds", Int),
            (11, "labels", MapStrStr),
            (12, "annotations", MapStrStr),
            (13, "ownerReferences", RepMsg("OwnerReference")),
            (14, "finalizers", RepStr),
        ],
        "OwnerReference" => &[
            (1, "kind", Str),
            (3, "name", Str),
            (4, "uid", Str),
            (5, "apiVersion", Str),
            (6, "controller", Bool),
            (7, "blockOwnerDeletion", Bool),
        ],
        "DeleteOptions" => &[
            (1, "gracePeriodSeconds", Int),
            (2, "preconditions", Msg("Preconditions")),
            (3, "orphanDependents", Bool),
            (4, "propagationPolicy", Str),
            (5, "dryRun", RepStr),
        ],
        "Preconditions" => &[(1, "uid", Str), (2, "resourceVersion", Str)],
        "Eviction" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "deleteOptions", Msg("DeleteOptions")),
        ],
        "Namespace" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("NamespaceSpec")),
        ],
        "NamespaceSpec" => &[(1, "finalizers", RepStr)],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapStrBytes),
            (3, "type", Str),
            (4, "stringData", MapStrStr),
            (5, "immutable", Bool),
        ],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapStrStr),
            (3, "binaryData", MapStrBytes),
            (4, "immutable", Bool),
        ],
        "ServiceAccount" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "secrets", RepMsg("ObjectReference")),
            (3, "imagePullSecrets", RepMsg("LocalObjectReference")),
            (4, "automountServiceAccountToken", Bool),
        ],
        "ObjectReference" => &[
            (1, "kind", Str),
            (2, "namespace", Str),
            (3, "name", Str),
            (4, "uid", Str),
            (5, "apiVersion", Str),
            (6, "resourceVersion", Str),
            (7, "fieldPath", Str),
        ],
        "LocalObjectReference" => &[(1, "name", Str)],
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated varint")?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.i += 8;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.i += 4;
                Ok(())
            }
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while r.i < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => k = String::from_utf8_lossy(r.bytes()?).into_owned(),
            (2, 2) => {
                let raw = r.bytes()?;
                v = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(String::from_utf8_lossy(raw))
                };
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn message(name: &str, b: &[u8]) -> Result<Value, String> {
    let fields = schema(name).ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while r.i < b.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some((_, json_name, ty)) = fields.iter().find(|(n, _, _)| *n == num) else {
            r.skip(wire)?;
            continue;
        };
        let key = json_name.to_string();
        match ty {
            F::Str => {
                // gogo-protobuf writes empty non-pointer strings; JSON omits them.
                let v = String::from_utf8_lossy(r.bytes()?).into_owned();
                if !v.is_empty() {
                    out.insert(key, json!(v));
                }
            }
            F::Bytes => {
                out.insert(
                    key,
                    json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
                );
            }
            F::Int => {
                out.insert(key, json!(r.varint()? as i64));
            }
            F::Bool => {
                out.insert(key, json!(r.varint()? != 0));
            }
            F::Msg(m) => {
                out.insert(key, message(m, r.bytes()?)?);
            }
            F::MapStrStr | F::MapStrBytes => {
                let (k, v) = map_entry(r.bytes()?, matches!(ty, F::MapStrBytes))?;
                let slot = out.entry(key).or_insert_with(|| json!({}));
                slot[k] = v;
            }
            F::RepStr => {
                let s = json!(String::from_utf8_lossy(r.bytes()?));
                if let Some(a) = out.entry(key).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(s);
                }
            }
            F::RepMsg(m) => {
                let v = message(m, r.bytes()?)?;
                if let Some(a) = out.entry(key).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// A protobuf-encoded request body as the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\x00")
        .ok_or("protobuf body without the k8s envelope")?;
    let env = message("Unknown", raw)?;
    let kind = env
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = env
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let inner = env
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut obj = message(&kind, &inner)?;
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(api_version);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | wire) as u8];
        if wire == 2 {
            v.push(payload.len() as u8);
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_an_eviction_as_drain_sends_it() {
        let meta = [field(1, 2, b"web-1"), field(3, 2, b"default")].concat();
        let opts = field(1, 0, &[30]);
        let eviction = [field(1, 2, &meta), field(2, 2, &opts)].concat();
        let tm = [field(1, 2, b"policy/v1"), field(2, 2, b"Eviction")].concat();
        let unknown = [field(1, 2, &tm), field(2, 2, &eviction)].concat();
        let body = [b"k8s\x00".to_vec(), unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Eviction");
        assert_eq!(v["metadata"]["name"], "web-1");
        assert_eq!(v["deleteOptions"]["gracePeriodSeconds"], 30);
    }
}
