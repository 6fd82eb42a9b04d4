//! The browser UI, compiled into the binary: the chat page at `/`, and the
//! file-transfer pages `/send` and `/receive` (the browser side of the
//! `/files` relay, end-to-end encrypted in the page).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// `GET /`
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../ui/index.html"))
}

/// `GET /send`
pub async fn send() -> Html<&'static str> {
    Html(include_str!("../ui/send.html"))
}

/// `GET /receive`
pub async fn receive() -> Html<&'static str> {
    Html(include_str!("../ui/receive.html"))
}

fn javascript(source: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
}

fn css(source: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], source).into_response()
}

/// `GET /app.js`
pub async fn script() -> Response {
    javascript(include_str!("../ui/app.js"))
}

/// `GET /app.css`
pub async fn style() -> Response {
    css(include_str!("../ui/app.css"))
}

/// `GET /transfer.js`: the /send and /receive pages.
pub async fn transfer_script() -> Response {
    javascript(include_str!("../ui/transfer.js"))
}

/// `GET /transfer-core.js`: the transfer protocol (SPAKE2, sealing, relay).
pub async fn transfer_core() -> Response {
    javascript(include_str!("../ui/transfer-core.js"))
}

/// `GET /transfer-protocol.js`: the relay protocol's facts, generated from
/// `duplex-transfer` (the Rust definitions the relay and the CLI use).
pub async fn transfer_protocol() -> Response {
    javascript(include_str!("../ui/transfer-protocol.js"))
}

/// `GET /transfer.css`
pub async fn transfer_style() -> Response {
    css(include_str!("../ui/transfer.css"))
}

/// `GET /vendor/noble.js`: the @noble cryptography, bundled (see
/// `ui/vendor/README.md`).
pub async fn noble() -> Response {
    javascript(include_str!("../ui/vendor/noble.js"))
}

/// `GET /duplex.js`: the JavaScript hub client (an ES module; the chat
/// page is a UI on it).
pub async fn hub_client() -> Response {
    javascript(include_str!("../ui/duplex.js"))
}

fn typescript(source: &'static str) -> Response {
    // Plain text: a browser shows it, and tools do not look at the type.
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        source,
    )
        .into_response()
}

/// `GET /duplex.d.ts`: the hub client's TypeScript declarations.
pub async fn hub_client_types() -> Response {
    typescript(include_str!("../ui/duplex.d.ts"))
}

/// `GET /hub-protocol.d.ts`: the generated facts' declarations.
pub async fn hub_protocol_types() -> Response {
    typescript(include_str!("../ui/hub-protocol.d.ts"))
}

/// `GET /hub-protocol.js`: the hub protocol's facts, generated from
/// `crates/hub` (see [`duplex_hub::javascript`]).
pub async fn hub_protocol() -> Response {
    javascript(include_str!("../ui/hub-protocol.js"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hub_protocol_js_is_up_to_date() {
        let ui = concat!(env!("CARGO_MANIFEST_DIR"), "/ui");
        for (file, want) in [
            ("hub-protocol.js", duplex_hub::javascript::module()),
            ("hub-protocol.d.ts", duplex_hub::javascript::declarations()),
        ] {
            let path = format!("{ui}/{file}");
            if std::env::var_os("DUPLEX_REGENERATE").is_some() {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{path} is out of date with crates/hub: run \
                 `DUPLEX_REGENERATE=1 cargo test -p duplex-server --lib hub_protocol_js`"
            );
        }
    }
}
