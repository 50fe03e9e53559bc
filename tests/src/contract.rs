//! The management API's contract: every response a test sees is checked against
//! `services/gateway/openapi.json` (documented status, JSON body matching its schema).

use serde_json::Value;
use std::sync::OnceLock;

pub struct Contract {
    doc: Value,
}

/// One JSON-pointer reference token, escaped for use in a URI fragment.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D")
}

impl Contract {
    /// The document, loaded once per test process.
    pub fn get() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(|| {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/gateway/openapi.json");
            let doc = serde_json::from_str(&std::fs::read_to_string(path).expect("openapi.json"))
                .expect("openapi.json is JSON");
            Contract { doc }
        })
    }

    /// The documented path template that `path` (without its query) is an instance of.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .find(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segments.len()
                    && ts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| (t.starts_with('{') && t.ends_with('}')) || t == s)
            })
            .cloned()
    }

    /// Checks one response; `Err` says what does not match.
    pub fn check(
        &self,
        method: &str,
        path_and_query: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let path = path_and_query.split('?').next().unwrap_or_default();
        let template = self
            .template(path)
            .ok_or_else(|| format!("{method} {path}: no such path in openapi.json"))?;
        let method = method.to_ascii_lowercase();
        let op = &self.doc["paths"][&template][&method];
        if op.is_null() {
            return Err(format!("{method} {template}: no such operation in openapi.json"));
        }
        let code = status.to_string();
        if op["responses"][&code].is_null() {
            return Err(format!(
                "{method} {template}: status {status} is not documented (body {body})"
            ));
        }
        let pointer = format!(
            "#/paths/{}/{method}/responses/{code}/content/application~1json/schema",
            escape(&template)
        );
        let mut root = self.doc.clone();
        root["$ref"] = Value::String(pointer);
        let validator = jsonschema::validator_for(&root)
            .map_err(|e| format!("openapi.json schema error: {e}"))?;
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} -> {status}: body does not match the schema: {}\nbody: {body}",
                problems.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_document_is_what_its_generator_writes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/gateway");
        let out = std::process::Command::new("python3")
            .arg(format!("{dir}/openapi.gen.py"))
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            generated,
            Contract::get().doc,
            "openapi.json is stale: regenerate it with openapi.gen.py"
        );
    }

    #[test]
    fn the_contract_catches_undocumented_shapes() {
        let c = Contract::get();
        assert!(c
            .check(
                "GET",
                "/api/v1/me",
                200,
                &json!({"name": "admin", "role": "administrator", "may_manage": true})
            )
            .is_ok());
        assert!(
            c.check("GET", "/api/v1/me", 200, &json!({"name": "admin"})).is_err(),
            "missing fields"
        );
        assert!(
            c.check(
                "GET",
                "/api/v1/me",
                200,
                &json!({"name": "admin", "role": "boss", "may_manage": true})
            )
            .is_err(),
            "bad enum"
        );
        assert!(c.check("GET", "/api/v1/me", 418, &json!({})).is_err(), "undocumented status");
        assert!(c.check("GET", "/api/v1/nowhere", 200, &json!({})).is_err(), "undocumented path");
        assert!(c
            .check(
                "GET",
                "/api/v1/endpoints/abc?x=1",
                404,
                &json!({"success": false, "error": "no"})
            )
            .is_ok());
    }
}
