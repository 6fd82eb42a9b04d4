//! The browser UI, compiled into the binary: the chat page at `/`.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// `GET /`
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../ui/index.html"))
}

/// `GET /app.js`
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../ui/app.js"),
    )
        .into_response()
}

/// `GET /app.css`
pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../ui/app.css"),
    )
        .into_response()
}
