//! `GET /openapi.json`: the OpenAPI 3.1 document of the gateway's HTTP API
//! (services/gateway/openapi.json, compiled in). A test checks that it names exactly the
//! routes of [`super::ROUTES`]; a schemathesis run in the Python tests checks that the answers
//! match it.

use actix_web::HttpResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT)
}

/// An actix path pattern as OpenAPI writes it (`{id:.+}` → `{id}`).
pub fn openapi_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut in_regex = false;
    for c in pattern.chars() {
        match c {
            ':' if out.ends_with(|p: char| p.is_alphanumeric() || p == '_') && out.contains('{') => in_regex = true,
            '}' => {
                in_regex = false;
                out.push(c);
            }
            _ if in_regex => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_names_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
            .collect();
        let served: BTreeSet<(String, String)> = crate::routes::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), openapi_path(p)))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "served but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn every_reference_resolves_and_every_operation_has_an_id_and_answers() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let text = DOCUMENT;
        let prefix = "\"$ref\": \"#/components/schemas/";
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
        }
        let mut ids = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn patterns_become_openapi_paths() {
        assert_eq!(openapi_path("/v1/models/{id:.+}"), "/v1/models/{id}");
        assert_eq!(
            openapi_path("/v1/conversations/{id}/items/{item_id}"),
            "/v1/conversations/{id}/items/{item_id}"
        );
        assert_eq!(openapi_path("/"), "/");
    }
}
