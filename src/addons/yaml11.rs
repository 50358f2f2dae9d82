//! Chart values as YAML that reads back with the same types in Helm. Helm (v4.1.4, inside
//! klipper-helm) reads `--values` files with `sigs.k8s.io/yaml` on go-yaml v2, a YAML 1.1
//! reader (helm `pkg/chart/v2/loader/load.go`:32, :212-230): there a plain `on`, `off`, `yes`,
//! `no`, `y` or `n` (in three cases each) is a boolean, and a plain `~` or `Null` is null
//! (go-yaml v2 `resolve.go`:37-43), where a YAML 1.2 writer leaves them plain because to it
//! they are strings. So every string that is not plainly a string to both is written quoted,
//! keys included: a values key `on` would otherwise become `"true"`.

use serde_json::Value;

/// The words go-yaml v2 resolves to a boolean or null (resolve.go:37-43), compared without
/// case here: a mixed-case `yES` is a string to it, but quoting it costs nothing.
const SPECIAL: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

/// Whether `s` reads back as this same string from a plain scalar in YAML 1.1 and 1.2: it
/// starts with a letter, `_` or `/` (so it is no number, date, `.inf` or indicator), holds
/// only letters, digits and `_./-` and inner single spaces, and is none of [`SPECIAL`].
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ' '))
        && !SPECIAL.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// A double-quoted scalar: JSON's escapes are a subset of YAML's.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn key(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// A multi-line string as a literal block (never type-resolved), when it can be one: no
/// carriage returns or other control characters, and a first line that does not start with
/// a space (that would need an indentation indicator).
fn block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with(' ')
        && !s.starts_with('\n')
        && !s.chars().any(|c| c.is_control() && c != '\n')
}

/// `v` as a scalar on the line of its key or dash, or `None` when it is a non-empty
/// collection or a block string.
fn inline(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if block_ok(s) => None,
        Value::String(s) if plain_ok(s) => Some(s.clone()),
        Value::String(s) => Some(quoted(s)),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

/// A literal block for `s` at `indent`: `|-`, `|` or `|+` keeps its trailing newlines.
fn block(s: &str, indent: usize, out: &mut String) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => " |-\n",
        1 => " |\n",
        _ => " |+\n",
    });
    let pad = " ".repeat(indent);
    for line in s.split_inclusive('\n') {
        if line != "\n" {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    if trailing == 0 {
        out.push('\n');
    }
}

/// `x` after a `key:` or a `-` at `indent`, when it is a scalar or a block string: `false`
/// (nothing written) for a collection, which goes below.
fn scalar_after(x: &Value, indent: usize, out: &mut String) -> bool {
    match (inline(x), x) {
        (Some(s), _) => {
            out.push(' ');
            out.push_str(&s);
            out.push('\n');
            true
        }
        (None, Value::String(s)) => {
            block(s, indent + 2, out);
            true
        }
        _ => false,
    }
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                if !scalar_after(x, indent, out) {
                    out.push('\n');
                    // A sequence under a key sits at the key's indentation.
                    let inner = if x.is_array() { indent } else { indent + 2 };
                    write(x, inner, out);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                out.push_str(&pad);
                out.push('-');
                if !scalar_after(x, indent, out) {
                    // The collection's first line goes beside the dash.
                    let mut inner = String::new();
                    write(x, indent + 2, &mut inner);
                    out.push(' ');
                    out.push_str(inner.trim_start());
                }
            }
        }
        other => {
            out.push_str(&pad);
            match inline(other) {
                Some(s) => out.push_str(&s),
                None => block(other.as_str().unwrap_or(""), indent + 2, out),
            }
            out.push('\n');
        }
    }
}

/// `v` as YAML whose every scalar Helm reads back with its type.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match inline(v) {
        Some(s) if !v.is_string() || !s.is_empty() => {
            if v.is_object() || v.is_array() {
                out.push_str(&s);
                out.push('\n');
            } else {
                write(v, 0, &mut out);
            }
        }
        _ => write(v, 0, &mut out),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What go-yaml v2 (YAML 1.1) makes of a plain scalar, as far as these tests need:
    /// resolve.go:37-43's table, ints and floats; everything else a string.
    fn yaml11_plain(s: &str) -> Value {
        const T: &[&str] = &[
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ];
        const F: &[&str] = &[
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ];
        const NULL: &[&str] = &["", "~", "null", "Null", "NULL"];
        if T.contains(&s) {
            return json!(true);
        }
        if F.contains(&s) {
            return json!(false);
        }
        if NULL.contains(&s) {
            return Value::Null;
        }
        if let Ok(i) = s.replace('_', "").parse::<i64>() {
            return json!(i);
        }
        json!(s)
    }

    #[test]
    fn every_yaml11_boolean_word_stays_a_string() {
        for w in [
            "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE",
            "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ] {
            let v = json!({ "value": w, w: "key" });
            let text = to_string(&v);
            assert!(text.contains(&format!("value: \"{w}\"")), "{w}: {text}");
            assert!(text.contains(&format!("\"{w}\": key")), "{w}: {text}");
            assert_eq!(
                yaml11_plain(w),
                if w.starts_with(['t', 'T', 'y', 'Y', 'o', 'O']) && !w.eq_ignore_ascii_case("off") {
                    json!(true)
                } else {
                    json!(false)
                },
                "{w}"
            );
        }
    }

    #[test]
    fn null_words_numbers_and_dates_that_are_strings_stay_strings() {
        for w in [
            "~",
            "null",
            "Null",
            "NULL",
            "",
            "0755",
            "1_000",
            "12",
            "1.5",
            "1e3",
            "2024-04-01",
            ".inf",
            "24h",
            "1:20",
        ] {
            let v = json!({ "value": w });
            let text = to_string(&v);
            assert!(
                text.contains(&format!("value: {}", quoted(w))),
                "{w}: {text}"
            );
        }
    }

    #[test]
    fn what_is_written_plain_is_a_string_to_yaml11() {
        for s in [
            "traefik",
            "plain text",
            "/var/lib/x",
            "a.b-c_d",
            "ingress-system",
            "Ony",
        ] {
            assert!(plain_ok(s), "{s}");
            assert_eq!(yaml11_plain(s), json!(s), "{s}");
        }
        for s in [
            "on", "Off", "y", "~", "1", "-x", ".inf", "a:b", "a #b", " a", "a ", "@x", "*x", "&x",
            "!x", "%x", "a  b", "yES",
        ] {
            assert!(!plain_ok(s), "{s}");
        }
    }

    #[test]
    fn layout_is_block_yaml_and_round_trips() {
        let v = json!({
            "a": {"b": 1, "c": [1, "two", {"d": true, "e": null}], "f": []},
            "g": {},
            "h": "plain text",
            "script": "line one\nline two\n",
            "list": [["x", "y"], {"k": "v"}],
            "url": "http://loki-gateway.infra/loki/api/v1/push",
        });
        let text = to_string(&v);
        assert_eq!(
            text,
            "a:\n  b: 1\n  c:\n  - 1\n  - two\n  - d: true\n    e: null\n  f: []\ng: {}\nh: plain text\nlist:\n- - x\n  - \"y\"\n- k: v\nscript: |\n  line one\n  line two\nurl: \"http://loki-gateway.infra/loki/api/v1/push\"\n"
        );
        let back: Value =
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap())
                .unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn blocks_keep_trailing_newlines_and_odd_strings_are_quoted() {
        for s in [
            "a\nb", "a\nb\n", "a\nb\n\n", "a\n\nb\n", " lead\nx", "cr\r\nlf",
        ] {
            let v = json!({ "s": s, "l": [s] });
            let text = to_string(&v);
            let back: Value =
                serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap())
                    .unwrap();
            assert_eq!(back, v, "{s:?}:\n{text}");
        }
    }
}
