//! Kubernetes `Status` errors (apimachinery `pkg/api/errors`): the code, reason and message
//! the apiserver sends, which kubectl turns into `Error from server (NotFound): ...`.

use serde_json::{json, Value};

use crate::kinds::KindInfo;

#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn details(ki: &KindInfo, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": ki.plural});
        if !ki.group.is_empty() {
            d["group"] = json!(ki.group);
        }
        d
    }

    pub fn not_found(ki: &KindInfo, name: &str) -> ApiError {
        ApiError {
            details: Self::details(ki, name),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", ki.resource()),
            )
        }
    }

    pub fn namespace_not_found(ns: &str) -> ApiError {
        ApiError {
            details: json!({"name": ns, "kind": "namespaces"}),
            ..Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
        }
    }

    pub fn already_exists(ki: &KindInfo, name: &str) -> ApiError {
        ApiError {
            details: Self::details(ki, name),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", ki.resource()),
            )
        }
    }

    pub fn conflict(ki: &KindInfo, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Self::details(ki, name),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    ki.resource()
                ),
            )
        }
    }

    pub fn invalid(ki: &KindInfo, name: &str, causes: &[(String, String)]) -> ApiError {
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = if msgs.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", ki.kind, msgs[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", ki.kind, msgs.join(", "))
        };
        let mut d = Self::details(ki, name);
        d["kind"] = json!(ki.kind);
        d["causes"] = json!(causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect::<Vec<_>>());
        ApiError {
            details: d,
            ..Self::new(422, "Invalid", message)
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> ApiError {
        Self::new(403, "Forbidden", msg)
    }

    pub fn method_not_allowed(msg: impl Into<String>) -> ApiError {
        Self::new(405, "MethodNotAllowed", msg)
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        Self::new(500, "InternalError", msg)
    }

    /// What the apiserver answers while etcd has no quorum.
    pub fn etcd_timeout() -> ApiError {
        Self::new(500, "", "etcdserver: request timed out")
    }

    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn to_json(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// The success `Status` some deletions return (collections, subresources).
pub fn success(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
