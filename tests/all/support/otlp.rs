//! A loopback OTLP/HTTP traces receiver (`POST /v1/traces`, protobuf): decodes every export
//! with the OpenTelemetry proto definitions (`opentelemetry-proto`) and keeps the spans.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<usize>>,
    headers: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Received,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        async fn traces(
            State(received): State<Received>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            *received.requests.lock().unwrap() += 1;
            received.headers.lock().unwrap().push(headers);
            let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
                return StatusCode::BAD_REQUEST;
            };
            let mut spans = received.spans.lock().unwrap();
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push((service.clone(), span));
                    }
                }
            }
            StatusCode::OK
        }
        let received = Received::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OtlpReceiver { addr, received }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, with its resource's `service.name` (debug-printed), each
    /// once: an exporter may send a batch again when its request timed out on a loaded
    /// machine (OTLP export is at least once), and a receiver takes the copy for the same span.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let mut seen = std::collections::HashSet::new();
        self.received
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| seen.insert((span.trace_id.clone(), span.span_id.clone())))
            .cloned()
            .collect()
    }

    /// The values of header `name` of each export request so far.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let headers = self.received.headers.lock().unwrap();
        headers
            .iter()
            .filter_map(|h| h.get(name))
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.received.requests.lock().unwrap()
    }
}
