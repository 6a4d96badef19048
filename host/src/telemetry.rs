//! OpenTelemetry traces of jobs (docs/observability.md): one process-wide tracer, exporting
//! over OTLP HTTP/protobuf, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or the config file's `[tracing] endpoint`) is set.
//!
//! Off is the default and costs one atomic load per would-be span: [`tracer`] answers `None`
//! and no span, exporter or thread exists. On, spans go to a batch processor (its own thread)
//! whose exporter sends through [`TokioClient`], a hyper client driven by the host's tokio
//! runtime, so no second HTTP stack is linked.
//!
//! Key items: [`init`] (at `wasmq run` / `wasmq serve` start, [`Settings::resolve`] the
//! environment over the file's [`FileTracing`]), [`shutdown`] (flushes),
//! [`parent_context`] (a job's traceparent as the parent of a span), [`traceparent`] (a span's
//! context as a job's traceparent).

use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
pub use opentelemetry::trace::Span;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
pub use opentelemetry_sdk::trace::Span as SdkSpan;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};

use crate::queue::validate_traceparent;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// The tracer, when tracing is on.
pub fn tracer() -> Option<&'static SdkTracer> {
    TELEMETRY.get().map(|t| &t.tracer)
}

/// The `[tracing]` table of `wasmq run`'s config file. Every key is optional; tracing is on
/// when an endpoint is given here or in the environment, and the standard `OTEL_*` variables
/// win over these keys (docs/observability.md).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTracing {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`): spans go to `<base>/v1/traces`.
    pub endpoint: Option<String>,
    /// `service.name` (`OTEL_SERVICE_NAME`).
    pub service_name: Option<String>,
    /// `OTEL_TRACES_SAMPLER`'s values: `always_on`, `always_off`, `traceidratio`,
    /// `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`.
    pub sampler: Option<String>,
    /// The ratio of a `traceidratio` sampler, 0 to 1 (`OTEL_TRACES_SAMPLER_ARG`).
    pub sampler_arg: Option<f64>,
    /// Headers sent with each export, like an API key (`OTEL_EXPORTER_OTLP_HEADERS`, whose
    /// entries win over these by name).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// What tracing runs with: the environment over the file (see [`Settings::resolve`]).
#[derive(Debug)]
pub struct Settings {
    /// The full traces URL.
    pub endpoint: String,
    pub service_name: String,
    /// `None`: the SDK's own choice, which reads `OTEL_TRACES_SAMPLER(_ARG)` itself.
    pub sampler: Option<Sampler>,
    /// The file's headers; `OTEL_EXPORTER_OTLP(_TRACES)_HEADERS` are added over them by the
    /// exporter.
    pub headers: std::collections::HashMap<String, String>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Tracing's settings from the standard variables over `file`; `None` when no endpoint is
    /// given or `OTEL_SDK_DISABLED=true`. A bad value of the file is an error naming its key.
    pub fn resolve(file: Option<&FileTracing>) -> anyhow::Result<Option<Settings>> {
        let empty = FileTracing::default();
        let file = file.unwrap_or(&empty);
        let checked = check_file(file)?;
        if env_var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let base = env_var("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| file.endpoint.clone());
        let Some(endpoint) = env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| base.map(|b| format!("{}/v1/traces", b.trim_end_matches('/'))))
        else {
            return Ok(None);
        };
        let service_name = env_var("OTEL_SERVICE_NAME")
            .or_else(|| file.service_name.clone())
            .unwrap_or_else(|| "wasmq".to_string());
        let sampler = match (env_var("OTEL_TRACES_SAMPLER"), &file.sampler) {
            (None, Some(name)) => {
                // The variable's ratio wins over the file's, as the variables do.
                let arg = match env_var("OTEL_TRACES_SAMPLER_ARG") {
                    Some(text) => Some(text.trim().parse::<f64>().map_err(|_| {
                        anyhow::anyhow!("OTEL_TRACES_SAMPLER_ARG: {text:?} is not a number")
                    })?),
                    None => file.sampler_arg,
                };
                Some(sampler(name, arg)?)
            }
            _ => None,
        };
        Ok(Some(Settings {
            endpoint,
            service_name,
            sampler,
            headers: checked,
        }))
    }
}

/// Checks every key of the file (even those the environment overrides, so a bad file is
/// found before the day the variable is unset); returns its headers.
fn check_file(file: &FileTracing) -> anyhow::Result<std::collections::HashMap<String, String>> {
    if let Some(endpoint) = &file.endpoint {
        let uri: ::http::Uri = endpoint
            .parse()
            .map_err(|_| anyhow::anyhow!("[tracing] endpoint: {endpoint:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            anyhow::bail!(
                "[tracing] endpoint: {endpoint:?} must be an http:// or https:// URL with a host \
                 (the collector's base URL, like http://collector:4318)"
            );
        }
    }
    if let Some(name) = &file.service_name
        && name.trim().is_empty()
    {
        anyhow::bail!("[tracing] service_name: must not be empty");
    }
    if let Some(name) = &file.sampler {
        sampler(name, file.sampler_arg)?;
    } else if file.sampler_arg.is_some() {
        anyhow::bail!(
            "[tracing] sampler_arg: given without a sampler (traceidratio or parentbased_traceidratio)"
        );
    }
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &file.headers {
        if ::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            anyhow::bail!("[tracing] headers: {name:?} is not an HTTP header name");
        }
        // The value may be a credential: not shown.
        if ::http::HeaderValue::from_str(value).is_err() {
            anyhow::bail!(
                "[tracing] headers.{name}: the value is not a valid HTTP header value \
                 (printable ASCII)"
            );
        }
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

/// The sampler the file names, `arg` its ratio.
fn sampler(name: &str, arg: Option<f64>) -> anyhow::Result<Sampler> {
    let ratio = || -> anyhow::Result<f64> {
        match arg {
            Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
            Some(r) => anyhow::bail!("[tracing] sampler_arg: {r} is not a ratio from 0 to 1"),
            None => Ok(1.0),
        }
    };
    let needs_no_arg = || -> anyhow::Result<()> {
        if arg.is_some() {
            anyhow::bail!("[tracing] sampler_arg: sampler {name:?} takes no argument");
        }
        Ok(())
    };
    Ok(match name {
        "always_on" => needs_no_arg().map(|()| Sampler::AlwaysOn)?,
        "always_off" => needs_no_arg().map(|()| Sampler::AlwaysOff)?,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => {
            needs_no_arg().map(|()| Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))?
        }
        "parentbased_always_off" => {
            needs_no_arg().map(|()| Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))?
        }
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        other => anyhow::bail!(
            "[tracing] sampler: {other:?} is not one of always_on, always_off, traceidratio, \
             parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
        ),
    })
}

/// Turns tracing on when the environment or the config file's `[tracing]` asks for it (see
/// [`Settings::resolve`]). Must run inside the tokio runtime the exports will use. Returns
/// whether tracing is on.
pub fn init(file: Option<&FileTracing>) -> anyhow::Result<bool> {
    let Some(settings) = Settings::resolve(file)? else {
        return Ok(false);
    };
    let provider = provider(&settings, exporter(&settings)?);
    let tracer = provider.tracer("wasmq");
    if TELEMETRY.set(Telemetry { provider, tracer }).is_err() {
        anyhow::bail!("tracing was already initialised");
    }
    tracing::info!(endpoint = %settings.endpoint, "exporting traces over OTLP");
    Ok(true)
}

/// Turns tracing on with `exporter` in place of OTLP, sampling every span (the telemetry
/// benchmark, `benches/telemetry.rs`, exports to one that drops them). Must run inside a tokio
/// runtime.
pub fn init_with_exporter<E: SpanExporter + 'static>(exporter: E) -> anyhow::Result<()> {
    let settings = Settings {
        endpoint: String::new(),
        service_name: "wasmq".to_string(),
        sampler: Some(Sampler::AlwaysOn),
        headers: std::collections::HashMap::new(),
    };
    let provider = provider(&settings, exporter);
    let tracer = provider.tracer("wasmq");
    if TELEMETRY.set(Telemetry { provider, tracer }).is_err() {
        anyhow::bail!("tracing was already initialised");
    }
    Ok(())
}

fn exporter(settings: &Settings) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let client = TokioClient {
        runtime: tokio::runtime::Handle::current(),
        client: HyperClient::builder(TokioExecutor::new()).build_http(),
    };
    let endpoint = &settings.endpoint;
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(settings.headers.clone())
        .build()
        .map_err(|err| anyhow::anyhow!("OTLP exporter to {endpoint}: {err}"))
}

/// A provider batching to `exporter`, with the settings' resource and sampler.
fn provider<E: SpanExporter + 'static>(settings: &Settings, exporter: E) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The builder's default configuration reads OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_*.
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    if let Some(sampler) = &settings.sampler {
        builder = builder.with_sampler(sampler.clone());
    }
    builder.build()
}

/// Exports what is buffered and stops the exporter; nothing when tracing is off. Blocks: call
/// it once, at exit, off the async threads (`spawn_blocking`).
pub fn shutdown() {
    if let Some(telemetry) = TELEMETRY.get()
        && let Err(err) = telemetry.provider.shutdown()
    {
        tracing::warn!(error = %err, "flushing traces at exit failed");
    }
}

/// The span context a W3C `traceparent` (checked with [`validate_traceparent`]) and its
/// `tracestate` name, as a remote parent; `None` for anything else.
pub fn span_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    validate_traceparent(traceparent).ok()?;
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    ))
}

/// A context whose parent is the span that `traceparent` names (a root context without one).
pub fn parent_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    match traceparent.and_then(|t| span_context(t, tracestate)) {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    }
}

/// The W3C `traceparent` and `tracestate` of a span context (`None` for an invalid one).
pub fn traceparent(context: &SpanContext) -> Option<(String, Option<String>)> {
    if !context.is_valid() {
        return None;
    }
    let header = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags() & TraceFlags::SAMPLED
    );
    let state = context.trace_state().header();
    Some((header, Some(state).filter(|s| !s.is_empty())))
}

/// An attempt's `process` span (OpenTelemetry messaging conventions), started at `started`,
/// when tracing is on.
/// Its parent is the job's trace context on the first attempt; a later attempt is a new root
/// *linked* to that context, so a retry hours later does not stretch the producer's trace.
pub fn process_span(
    queue: &str,
    job_id: &str,
    handler: &str,
    attempt: u32,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    started: std::time::SystemTime,
) -> Option<SdkSpan> {
    let tracer = tracer()?;
    let producer = traceparent.and_then(|t| span_context(t, tracestate));
    let mut builder = tracer
        .span_builder(format!("process {queue}"))
        .with_kind(SpanKind::Consumer)
        .with_start_time(started)
        .with_attributes([
            KeyValue::new("messaging.system", "wasmq"),
            KeyValue::new("messaging.destination.name", queue.to_string()),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.message.id", job_id.to_string()),
            KeyValue::new("wasmq.handler", handler.to_string()),
            KeyValue::new("wasmq.attempt", i64::from(attempt)),
        ]);
    let parent = match producer {
        Some(remote) if attempt <= 1 => Context::new().with_remote_span_context(remote),
        Some(remote) => {
            builder = builder.with_links(vec![Link::with_context(remote)]);
            Context::new()
        }
        None => Context::new(),
    };
    Some(builder.start_with_context(tracer, &parent))
}

/// Ends an attempt's span with its outcome class and the handler version that ran it.
pub fn end_process(mut span: SdkSpan, outcome: &str, version: Option<&str>) {
    span.set_attribute(KeyValue::new("wasmq.outcome", outcome.to_string()));
    if let Some(version) = version {
        span.set_attribute(KeyValue::new("wasmq.version", version.to_string()));
    }
    if outcome != "ok" && outcome != "suspended" {
        span.set_status(Status::error(outcome.to_string()));
    }
    span.end();
}

/// The `send` span of an enqueue (the API's), when tracing is on: a producer span under the
/// caller's context, whose own context becomes the job's traceparent.
pub fn send_span(
    queue: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<SdkSpan> {
    let tracer = tracer()?;
    let parent = parent_context(traceparent, tracestate);
    Some(
        tracer
            .span_builder(format!("send {queue}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "wasmq"),
                KeyValue::new("messaging.destination.name", queue.to_string()),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
            ])
            .start_with_context(tracer, &parent),
    )
}

/// The Rust client's `send` span of one enqueue ([`send_for_enqueue`]), made by wasmq's own
/// tracer (in `wasmq run`/`serve` with tracing on) or the process's global tracer provider
/// (an application that embeds the client and installed one).
pub struct SendSpan(SendSpanInner);

enum SendSpanInner {
    Off,
    Sdk(Box<SdkSpan>),
    Global(opentelemetry::global::BoxedSpan),
}

/// For [`crate::queue::Client::enqueue`]: when the caller gave the job no `traceparent` and a
/// tracer provider is installed, a `send <queue>` producer span under the current context
/// (the caller's span, else a new trace), whose context becomes the job's `traceparent`, so
/// its attempts are the span's children. A job with a traceparent is left as it is: its
/// producer traced the enqueue itself (the API's `send` span does). Without a provider:
/// the job as given, and no span.
pub fn send_for_enqueue<'a>(
    queue: &str,
    job: &'a crate::queue::NewJob,
) -> (std::borrow::Cow<'a, crate::queue::NewJob>, SendSpan) {
    use std::borrow::Cow;
    let off = || (Cow::Borrowed(job), SendSpan(SendSpanInner::Off));
    if job.options.traceparent.is_some() {
        return off();
    }
    let parent = Context::current();
    let builder = || {
        opentelemetry::trace::SpanBuilder::from_name(format!("send {queue}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "wasmq"),
                KeyValue::new("messaging.destination.name", queue.to_string()),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
            ])
    };
    let span = match tracer() {
        Some(tracer) => SendSpanInner::Sdk(Box::new(tracer.build_with_context(builder(), &parent))),
        None => {
            let tracer = opentelemetry::global::tracer("wasmq");
            let span = tracer.build_with_context(builder(), &parent);
            // The no-op provider (none installed) hands back the parent's own context.
            let own = span.span_context();
            if !own.is_valid() || own.span_id() == parent.span().span_context().span_id() {
                return off();
            }
            SendSpanInner::Global(span)
        }
    };
    let span = SendSpan(span);
    let Some((traceparent, tracestate)) = self::traceparent(&span.context()) else {
        return off();
    };
    let mut traced = job.clone();
    traced.options.traceparent = Some(traceparent);
    traced.options.tracestate = tracestate;
    (Cow::Owned(traced), span)
}

impl SendSpan {
    fn context(&self) -> SpanContext {
        match &self.0 {
            SendSpanInner::Off => SpanContext::empty_context(),
            SendSpanInner::Sdk(span) => span.span_context().clone(),
            SendSpanInner::Global(span) => span.span_context().clone(),
        }
    }

    /// Ends the span with the enqueue's result (the job's id, or the error), and returns it.
    pub fn ended(
        self,
        result: Result<Vec<crate::queue::Enqueued>, crate::queue::QueueError>,
    ) -> Result<Vec<crate::queue::Enqueued>, crate::queue::QueueError> {
        fn end(
            span: &mut impl Span,
            result: &Result<Vec<crate::queue::Enqueued>, crate::queue::QueueError>,
        ) {
            match result {
                Ok(enqueued) => {
                    if let Some(first) = enqueued.first() {
                        span.set_attribute(KeyValue::new("messaging.message.id", first.id.clone()));
                    }
                }
                Err(err) => span.set_status(Status::error(err.to_string())),
            }
            span.end();
        }
        match self.0 {
            SendSpanInner::Off => {}
            SendSpanInner::Sdk(mut span) => end(&mut *span, &result),
            SendSpanInner::Global(mut span) => end(&mut span, &result),
        }
        result
    }
}

/// The span of an outbound request a guest makes, when tracing is on and the attempt has a
/// span (the current context, see executor.rs): a client span, whose context goes out in the
/// request's `traceparent` (and `tracestate`) header, replacing the guest's own, so the called
/// service joins the trace.
pub fn client_span<B>(request: &mut ::http::Request<B>) -> Option<SdkSpan> {
    let tracer = tracer()?;
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    let uri = request.uri();
    let mut attributes = vec![
        KeyValue::new("http.request.method", request.method().as_str().to_string()),
        KeyValue::new("url.scheme", uri.scheme_str().unwrap_or("").to_string()),
        KeyValue::new("server.address", uri.host().unwrap_or("").to_string()),
    ];
    if let Some(port) = uri.port_u16() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let span = tracer
        .span_builder(request.method().as_str().to_string())
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let headers = request.headers_mut();
    headers.remove("traceparent");
    headers.remove("tracestate");
    if let Some((traceparent, tracestate)) = traceparent(span.span_context()) {
        if let Ok(value) = ::http::HeaderValue::from_str(&traceparent) {
            headers.insert("traceparent", value);
        }
        if let Some(value) = tracestate.and_then(|s| ::http::HeaderValue::from_str(&s).ok()) {
            headers.insert("tracestate", value);
        }
    }
    Some(span)
}

/// Ends an outbound request's span with the response's status (`None`: no response).
pub fn end_client(mut span: SdkSpan, status: Option<u16>) {
    match status {
        Some(code) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            if code >= 500 {
                span.set_status(Status::error(code.to_string()));
            }
        }
        None => span.set_status(Status::error("no response")),
    }
    span.end();
}

/// Log lines kept as events on one handler-run span; the SDK's own limit is 128 events per
/// span. Lines past it are counted in the span's `wasmq.log.events_dropped` attribute.
pub const MAX_LOG_EVENTS: u32 = 100;

/// A span under the current context (an attempt's `process` span, or a span inside it), when
/// tracing is on and the attempt has a span: the attempt's instantiation and its handler's run.
pub fn child_span(name: &'static str, attributes: Vec<KeyValue>) -> Option<SdkSpan> {
    let tracer = tracer()?;
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    Some(
        tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent),
    )
}

/// The context in which what `span` does runs: its children (outbound requests, queries) take
/// it from the current context.
pub fn context_of(span: &SdkSpan) -> Context {
    Context::current().with_remote_span_context(span.span_context().clone())
}

/// Ends a span, marking it failed with `error` when given.
pub fn end_span(mut span: SdkSpan, error: Option<&str>) {
    if let Some(error) = error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// A handler-run span and the log lines it took as events (at most [`MAX_LOG_EVENTS`]).
#[derive(Debug)]
pub struct LogEvents {
    span: SdkSpan,
    kept: u32,
    dropped: u64,
}

impl LogEvents {
    pub fn new(span: SdkSpan) -> Self {
        Self {
            span,
            kept: 0,
            dropped: 0,
        }
    }

    /// Adds one guest log line (`level`: stdout, stderr, info, ...) as a `log` event.
    pub fn line(&mut self, level: &'static str, message: &str) {
        if self.kept >= MAX_LOG_EVENTS {
            self.dropped += 1;
            return;
        }
        self.kept += 1;
        self.span.add_event(
            "log",
            vec![
                KeyValue::new("log.level", level),
                KeyValue::new("log.message", message.to_string()),
            ],
        );
    }

    /// The span, with the count of lines past the event cap.
    pub fn into_span(mut self) -> SdkSpan {
        if self.dropped > 0 {
            self.span.set_attribute(KeyValue::new(
                "wasmq.log.events_dropped",
                i64::try_from(self.dropped).unwrap_or(i64::MAX),
            ));
        }
        self.span
    }
}

/// The span of one SQL statement a handler runs (OpenTelemetry database conventions), when
/// tracing is on and the attempt has a span. `operation` is the statement's first keyword
/// ([`sql_operation`]); the statement's text and parameters are never recorded (they may hold
/// values), nor the connection string (it holds the password).
pub fn sql_span(
    operation: Option<&'static str>,
    label: &str,
    namespace: Option<&str>,
) -> Option<SdkSpan> {
    let name = match (operation, namespace) {
        (Some(op), Some(ns)) => format!("{op} {ns}"),
        (Some(op), None) => op.to_string(),
        (None, Some(ns)) => ns.to_string(),
        (None, None) => "postgresql".to_string(),
    };
    database_span(name, operation, label, namespace)
}

/// The span of a handler's `connection.open` of a granted database: the wait for a pooled
/// connection (and its connect, when the pool has none idle), when tracing is on and the
/// attempt has a span. Attributes as [`sql_span`]'s, with no operation. End it with
/// [`end_sql`].
pub fn sql_connect_span(label: &str, namespace: Option<&str>) -> Option<SdkSpan> {
    database_span(
        format!("connect {}", namespace.unwrap_or(label)),
        None,
        label,
        namespace,
    )
}

fn database_span(
    name: String,
    operation: Option<&'static str>,
    label: &str,
    namespace: Option<&str>,
) -> Option<SdkSpan> {
    let tracer = tracer()?;
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    let mut attributes = vec![
        KeyValue::new("db.system.name", "postgresql"),
        KeyValue::new("wasmq.database", label.to_string()),
    ];
    if let Some(operation) = operation {
        attributes.push(KeyValue::new("db.operation.name", operation));
    }
    if let Some(namespace) = namespace {
        attributes.push(KeyValue::new("db.namespace", namespace.to_string()));
    }
    Some(
        tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent),
    )
}

/// Ends a statement's span; `sqlstate` is the server's error code of a failed statement,
/// `error` the class of a failure without one (timeout, too large, ...).
pub fn end_sql(mut span: SdkSpan, failure: Option<(&str, &str)>) {
    if let Some((sqlstate, class)) = failure {
        if !sqlstate.is_empty() {
            span.set_attribute(KeyValue::new(
                "db.response.status_code",
                sqlstate.to_string(),
            ));
        }
        span.set_attribute(KeyValue::new("error.type", class.to_string()));
        span.set_status(Status::error(class.to_string()));
    }
    span.end();
}

/// The operation of a SQL statement: its first word when it is one of the SQL commands below
/// (upper-cased), else `None`. Only a keyword from this list can reach a span, never the
/// statement's own text.
pub fn sql_operation(statement: &str) -> Option<&'static str> {
    const COMMANDS: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "WITH",
        "VALUES",
        "CREATE",
        "ALTER",
        "DROP",
        "TRUNCATE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "COPY",
        "CALL",
        "DO",
        "GRANT",
        "REVOKE",
        "LOCK",
        "SET",
        "SHOW",
        "EXPLAIN",
        "ANALYZE",
        "VACUUM",
        "NOTIFY",
        "LISTEN",
        "COMMENT",
        "REFRESH",
        "REINDEX",
        "CLUSTER",
        "DISCARD",
        "RESET",
        "START",
        "END",
        "ABORT",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
        "DECLARE",
        "FETCH",
        "CLOSE",
        "MOVE",
        "TABLE",
    ];
    let word: String = statement
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .take(16)
        .collect();
    COMMANDS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&word))
        .copied()
}

/// The exporter's HTTP client: hyper on the host's tokio runtime. The batch processor calls
/// it from its own thread, so each request is spawned onto the runtime and awaited from there.
#[derive(Debug, Clone)]
struct TokioClient {
    runtime: tokio::runtime::Handle,
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

#[async_trait::async_trait]
impl HttpClient for TokioClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let sent = self.runtime.spawn(async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request))
                .await
                .map_err(|_| "OTLP export timed out".to_string())?
                .map_err(|err| err.to_string())?;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(EXPORT_TIMEOUT, body.collect())
                .await
                .map_err(|_| "OTLP export timed out".to_string())?
                .map_err(|err| err.to_string())?
                .to_bytes();
            Ok::<_, String>(Response::from_parts(parts, body))
        });
        match sent.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(message)) => Err(message.into()),
            Err(err) => Err(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_a_span_context() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = span_context(tp, Some("a=1,b=2")).unwrap();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(
            traceparent(&context).unwrap(),
            (tp.to_string(), Some("a=1,b=2".to_string()))
        );
        assert!(span_context("00-nope", None).is_none());
    }

    #[test]
    fn a_statements_operation_is_a_known_keyword_or_nothing() {
        assert_eq!(sql_operation("  select 1"), Some("SELECT"));
        assert_eq!(sql_operation("(SELECT 1) UNION (SELECT 2)"), Some("SELECT"));
        assert_eq!(sql_operation("insert into t values ($1)"), Some("INSERT"));
        assert_eq!(sql_operation("'secret' AS x"), None);
        assert_eq!(sql_operation("hunter2"), None);
        assert_eq!(sql_operation("SELECTED"), None);
        assert_eq!(sql_operation(""), None);
    }
}
