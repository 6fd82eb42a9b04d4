//! The HTTP API: server push (`POST /api/publish`), history, presence,
//! kick, health and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::keys_match;
use crate::publication::page_of;
use crate::state::AppState;
use crate::store::Range;
use duplex_hub::{ErrorCode, HubError, Kicked, Member, Members, check_channel, encode_data};

/// An API error: the status and `{"error": {"code", "message"}}`.
pub struct ApiError(StatusCode, HubError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.1}));
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // The condition is the machine's (a full disk, memory spent):
            // say when to retry.
            let retry = crate::admission::RETRY_AFTER_SECS;
            return (self.0, [(header::RETRY_AFTER, retry)], body).into_response();
        }
        (self.0, body).into_response()
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let status = match e.code {
            ErrorCode::BadRequest | ErrorCode::NotSubscribed | ErrorCode::NameTaken => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::Banned => StatusCode::FORBIDDEN,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e)
    }
}

fn check_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if keys_match(given, expected) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            HubError::new(
                ErrorCode::Unauthorized,
                "send Authorization: Bearer <api key> (see the key printed at start)",
            ),
        ))
    }
}

/// The body of `POST /api/publish`.
#[derive(Deserialize)]
pub struct PublishBody {
    channel: String,
    data: serde_json::Value,
}

/// `POST /api/publish`
pub async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    // Any Content-Type: `curl -d '{...}'` sends form encoding by default.
    let body: PublishBody = serde_json::from_slice(&body).map_err(|e| {
        HubError::new(
            ErrorCode::BadRequest,
            format!("the body must be {{\"channel\": ..., \"data\": ...}}: {e}"),
        )
    })?;
    check_channel(&body.channel)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let data = encode_data(&body.data, state.settings.max_data_size)?;
    let from = Member {
        client: "api".into(),
        user: "api".into(),
        name: "api".into(),
    };
    let receipt = state
        .broker
        .publish(&body.channel, data, from, key.as_deref())
        .await?;
    Ok(Json(receipt.published()).into_response())
}

/// Query of the history endpoint.
#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
    before: Option<u64>,
    after: Option<u64>,
}

/// `GET /api/channels/{channel}/history`
pub async fn history(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_channel(&channel)?;
    let Query(q) = query.map_err(|e| HubError::new(ErrorCode::BadRequest, e.body_text()))?;
    let range = Range::requested(q.limit, q.before, q.after);
    let page = state.store.history(&channel, range).await.map_err(|e| {
        tracing::error!("history: {e}");
        HubError::from(e)
    })?;
    let view = page_of(&channel, &page.position, None, &page.publications);
    Ok(Json(view).into_response())
}

/// `GET /api/channels/{channel}/presence`
pub async fn presence(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    check_channel(&channel)?;
    let members = state.broker.presence(&channel).await?;
    let members = Members {
        channel: channel.into(),
        members,
    };
    Ok(Json(members).into_response())
}

/// The body of a kick.
#[derive(Deserialize)]
pub struct KickBody {
    name: String,
    #[serde(default)]
    ban: bool,
}

/// `POST /api/channels/{channel}/kick`: always needs the API key.
pub async fn kick(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Result<Json<KickBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if state.api_key.is_none() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            HubError::new(
                ErrorCode::Forbidden,
                "kick needs an API key: start the server with --api-key",
            ),
        ));
    }
    check_key(&state, &headers)?;
    check_channel(&channel)?;
    let Json(body) = body.map_err(|e| HubError::new(ErrorCode::BadRequest, e.body_text()))?;
    let kicked = state.broker.kick(&channel, &body.name, body.ban).await?;
    Ok(Json(Kicked { kicked }).into_response())
}

/// `GET /metrics`
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.observe_budget(&state.sockets.budget);
    state.metrics.observe_admission(&state.admission);
    state
        .metrics
        .observe_transfers(&state.transfers, state.directory.as_deref());
    state.broker.observe(&state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: `ok`, or 503 with the reason when this node cannot
/// store or deliver publications (its Redis is unreachable).
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.broker.healthy() {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("unhealthy: {reason}\n"),
        )
            .into_response(),
    }
}
