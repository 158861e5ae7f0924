//! The public API, described: `GET /v1/openapi.json` serves `ingest/openapi.json`
//! (OpenAPI 3.1, hand-written: every route, every field with its limits, every
//! status with the JSON error shape). A test holds the router and the
//! document together.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, compiled in.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Serves [`DOCUMENT`].
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).unwrap_or_else(|e| panic!("openapi.json: {e}"))
    }

    #[test]
    fn every_route_of_the_router_is_described_and_nothing_else() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("no paths"));
        let routes = crate::routes();
        for route in &routes {
            let method = route.method.as_str().to_ascii_lowercase();
            let operation = &paths
                .get(route.path)
                .unwrap_or_else(|| panic!("{} is not in openapi.json", route.path))[&method];
            assert!(
                operation.is_object(),
                "{} {} is not in openapi.json",
                route.method,
                route.path
            );
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{} {}: no responses", route.method, route.path));
            assert!(responses.contains_key("200"), "{}: no 200", route.path);
        }
        for (path, item) in paths {
            let item = item.as_object().unwrap_or_else(|| panic!("{path}"));
            for method in item.keys().filter(|k| *k != "parameters") {
                assert!(
                    routes
                        .iter()
                        .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                    "openapi.json describes {method} {path}, which the router does not serve"
                );
            }
        }
    }

    #[test]
    fn every_error_status_uses_the_error_shape_and_refs_resolve() {
        let doc = document();
        let text = DOCUMENT;
        // Every $ref points at a defined component.
        for (at, _) in text.match_indices("\"$ref\": \"#/components/") {
            let rest = &text[at + "\"$ref\": \"#/components/".len()..];
            let target = rest.split('"').next().unwrap_or_default();
            let mut node = &doc["components"];
            for part in target.split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "unresolved $ref #/components/{target}");
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for (status, response) in op["responses"].as_object().into_iter().flatten() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["$ref"].is_string()
                                || response.to_string().contains("#/components/schemas/Error"),
                            "{method} {path} {status} does not use the Error shape"
                        );
                    }
                }
            }
        }
    }
}
