//! The web face on the whole stack (ingest, the broker, normalize, the
//! detector, the notifier with its web face, Redis), with scans pushed as
//! provider webhooks:
//!
//! - [`browser`] — the buyer page and the merchant console in headless
//!   Chromium (Debian's `chromium`, driven by `web/browser/*.mjs` through
//!   playwright-core): a link taken from a real buyer message, its timeline, a
//!   new scan arriving without a reload, English, bad links, another shop's
//!   orders never shown, the lookup, a live alert and a phone search.
//!   Screenshots land in `target/browser-artifacts/<test>/`;
//! - [`api`] — the JSON API and its event streams without a browser: the
//!   lookup's one answer for every miss and its rate limit, a link's scope,
//!   streams resumed by sequence number, the console's exact-match search,
//!   the OpenAPI document listing every route.
//!
//! Run: `cargo test -p trackstream-sandbox --test web` (the browser tests need
//! `deploy/local/install-deps.sh` to have installed chromium and the npm
//! packages; `deploy/local/test.sh` does).

mod api;
mod browser;
mod support;
