//! Pages and assets, compiled into the binary: every byte a browser loads
//! comes from us (no CDN, no third-party script, font or image), under a
//! strict Content-Security-Policy.

use std::collections::BTreeMap;
use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// `(name, content type, body)` of every asset under `/assets/`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/i18n.js"),
    ),
    (
        "render.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/render.js"),
    ),
    (
        "track.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/track.js"),
    ),
    (
        "lookup.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/lookup.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "console-panels.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console-panels.js"),
    ),
    (
        "openapi.json",
        "application/json",
        include_str!("../assets/openapi.json"),
    ),
];

/// The tracking page (`/t/{token}`).
pub const TRACK_HTML: &str = include_str!("../assets/track.html");
/// The lookup page (`/s/{merchant_id}`).
pub const LOOKUP_HTML: &str = include_str!("../assets/lookup.html");
/// The console (`/console`).
pub const CONSOLE_HTML: &str = include_str!("../assets/console.html");
/// The OpenAPI document (`/api/openapi.json`).
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// The policy every answer carries: scripts, styles, images and connections
/// only from this origin (images also `data:`), no framing, no plugins.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'; object-src 'none'";

/// An HTML page.
pub fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// `/assets/{name}`.
pub fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => {
            trackstream_runtime::ApiError::NotFound(format!("no asset {name:?}")).into_response()
        }
    }
}

/// Adds the security headers to every answer; API answers are never cached
/// (they hold order data) and pages are not either (they hold a token's view).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Largest logo file accepted.
pub const MAX_LOGO_BYTES: u64 = 256 * 1024;

/// Shop logos read at startup.
#[derive(Debug, Clone, Default)]
pub struct Logos {
    files: BTreeMap<String, (&'static str, Vec<u8>)>,
}

impl Logos {
    /// Reads `files` (merchant id → path); a missing, oversized or unknown-type
    /// file stops the service with the key named.
    pub fn load(files: &BTreeMap<String, std::path::PathBuf>) -> Result<Self, String> {
        let mut logos = Logos::default();
        for (merchant, path) in files {
            let key = format!("web.logos.{merchant}");
            let content_type = content_type(path).ok_or_else(|| {
                format!(
                    "{key}: {} is not a .png, .jpg, .webp or .svg file",
                    path.display()
                )
            })?;
            let size = std::fs::metadata(path)
                .map_err(|e| format!("{key}: {}: {e}", path.display()))?
                .len();
            if size > MAX_LOGO_BYTES {
                return Err(format!(
                    "{key}: {size} bytes, over the {MAX_LOGO_BYTES}-byte limit"
                ));
            }
            let bytes =
                std::fs::read(path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
            logos.files.insert(merchant.clone(), (content_type, bytes));
        }
        Ok(logos)
    }

    /// The shop's logo, or its initial on a coloured square when it has none.
    pub fn answer(&self, merchant_id: &str, name: &str) -> Response {
        let (content_type, body) = match self.files.get(merchant_id) {
            Some((content_type, bytes)) => (*content_type, Body::from(bytes.clone())),
            None => ("image/svg+xml", Body::from(monogram(name))),
        };
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response()
    }
}

fn content_type(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "svg" => Some("image/svg+xml"),
        _ => None,
    }
}

/// A square SVG with the shop name's first character, XML-escaped.
fn monogram(name: &str) -> String {
    let initial: String = name.chars().find(|c| !c.is_whitespace()).map_or_else(
        || "?".to_owned(),
        |c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_uppercase().collect(),
        },
    );
    let hue = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 360;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\" width=\"64\" height=\"64\">\
         <rect width=\"64\" height=\"64\" rx=\"14\" fill=\"hsl({hue},55%,45%)\"/>\
         <text x=\"32\" y=\"43\" font-size=\"30\" text-anchor=\"middle\" fill=\"#fff\" \
         font-family=\"sans-serif\">{initial}</text></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_and_style_a_page_loads_is_served() {
        for html in [TRACK_HTML, LOOKUP_HTML, CONSOLE_HTML] {
            for reference in html.split("/assets/").skip(1) {
                let name: String = reference
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\'' | '?'))
                    .collect();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "a page loads /assets/{name}, which is not served"
                );
            }
        }
    }

    #[test]
    fn a_monogram_escapes_a_hostile_shop_name() {
        let svg = monogram("<script>");
        assert!(svg.contains("&lt;"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn a_logo_of_an_unknown_type_stops_the_service_with_its_key() {
        let files = BTreeMap::from([("m".to_owned(), std::path::PathBuf::from("/x/logo.gif"))]);
        let err = Logos::load(&files).err().unwrap_or_default();
        assert!(err.starts_with("web.logos.m:"), "{err}");
    }
}
