//! One error shape for every answer that is not a success: `{"error": "<message>"}` with the
//! status that says whose fault it is (see docs/api.md, "Errors"). Also the body readers, which
//! refuse oversize and malformed bodies before anything is written.
//!
//! Bad input is always a 4xx with a message a person can act on; 5xx means Redis is away (503)
//! or holds data this version cannot read (500), never that a request was malformed.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::queue::QueueError;
use crate::registry::RegistryError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    #[schema(example = "invalid job: priority 2000 is outside -1000..=1000")]
    pub error: String,
}

/// The error answers every read endpoint shares, for its `responses(...)` after its own:
/// 400 (a bad queue name, id or parameter) and 503 (Redis unreachable).
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes answers for the OpenAPI document; never built"
)]
pub(crate) enum ReadErrors {
    #[response(status = 400, description = "Invalid name, id or parameter")]
    BadRequest(ErrorBody),
    #[response(status = 503, description = "Redis unreachable")]
    Unavailable(ErrorBody),
}

/// The error answers every write endpoint shares: [`ReadErrors`]' and 401 (the bearer token is
/// missing or wrong).
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes answers for the OpenAPI document; never built"
)]
pub(crate) enum WriteErrors {
    #[response(status = 400, description = "Invalid name, id or parameter")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "Missing or wrong token")]
    Unauthorized(ErrorBody),
    #[response(status = 503, description = "Redis unreachable")]
    Unavailable(ErrorBody),
}

/// An error answer: a status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over this endpoint's limit of {limit} bytes"),
        )
    }

    /// Redis unreachable (503) or a Redis failure that is not the caller's (500).
    fn redis(err: &redis::RedisError) -> ApiError {
        if redis_unreachable(err) {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Redis is unreachable: {err}"),
            )
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Redis request failed: {err}"),
            )
        }
    }
}

/// Whether `err` means Redis cannot be reached (rather than a refused command).
pub(crate) fn redis_unreachable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> ApiError {
        match &err {
            QueueError::Redis(redis) => ApiError::redis(redis),
            QueueError::InvalidQueue(_)
            | QueueError::InvalidJob { .. }
            | QueueError::InvalidArgument(_) => ApiError::bad_request(err.to_string()),
            QueueError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
            }
            QueueError::WrongType { .. } => ApiError::new(StatusCode::CONFLICT, err.to_string()),
            QueueError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, err.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> ApiError {
        let status = match &err {
            RegistryError::Redis(redis) => return ApiError::redis(redis),
            RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RegistryError::NoHandler(_) | RegistryError::NoVersion(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // The refusal's LoadError is its source, and the reader needs it.
        let message = crate::chain::ErrorChain(&err).to_string();
        ApiError::new(status, message)
    }
}

/// Most bytes of a refused body that are read and dropped before answering.
const DRAIN_MAX: u64 = 4 * 1024 * 1024;
/// Longest time spent reading and dropping a refused body.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what a client is still sending of a refused request (at most
/// [`DRAIN_MAX`] bytes, for at most [`DRAIN_TIME`]), so that it reads the answer: closing a
/// connection with unread data makes the kernel reset it, and the client may see the reset
/// instead of the 401 or 413. Larger bodies are cut off.
pub(crate) async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream) {
    let mut drained = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while drained <= DRAIN_MAX {
            match stream.next().await {
                Some(Ok(chunk)) => drained += chunk.len() as u64,
                _ => break,
            }
        }
    })
    .await;
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole body, refusing it with 413 once it passes `limit` bytes (by its declared
/// `Content-Length` before keeping anything, else while reading).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Vec<u8>, ApiError> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        drain(body).await;
        return Err(ApiError::too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::bad_request(format!("the request body could not be read: {err}"))
        })?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            drain_stream(stream).await;
            return Err(ApiError::too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Whether the request declares one of `accepted` as its media type (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, accepted: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|media| accepted.iter().any(|a| media.eq_ignore_ascii_case(a)))
}

/// Reads a JSON body of at most `limit` bytes into `T`. `allow_empty`: an empty body (with or
/// without a content type) is `T`'s JSON `{}`, for endpoints whose body is optional.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    allow_empty: bool,
) -> Result<T, ApiError> {
    let bytes = read_json_bytes(headers, body, limit, allow_empty).await?;
    parse_json(&bytes, allow_empty)
}

/// The first half of [`read_json`]: checks the media type and reads the body's bytes.
pub async fn read_json_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    allow_empty: bool,
) -> Result<Vec<u8>, ApiError> {
    let declared_empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    let has_type = headers.contains_key(header::CONTENT_TYPE);
    if !(allow_empty && (declared_empty || !has_type))
        && !content_type_is(headers, &["application/json"])
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON, with Content-Type: application/json",
        ));
    }
    read_body(headers, body, limit).await
}

/// The second half of [`read_json`]: the bytes as `T`, or a 400 that names where the JSON
/// went wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], allow_empty: bool) -> Result<T, ApiError> {
    let bytes: &[u8] = if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at {path}: {inner}"))
        }
    })?;
    // A body is one JSON value: anything after it (a second object, a stray byte) would be
    // silently dropped, and the request would not be the one the client meant.
    de.end().map_err(|err| {
        ApiError::bad_request(format!(
            "invalid JSON body: data after the JSON value: {err}"
        ))
    })?;
    Ok(value)
}

/// Gives the error shape to answers made outside our handlers (axum's own rejections of a path
/// or query, 405): their plain-text message becomes `{"error": ...}`.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}
