//! Traces over OTLP/HTTP (`HOOKD_OTLP_ENDPOINT`): a client span per attempt, the child of
//! the producer's span when its event carried a `traceparent`, exported in batches by the
//! OpenTelemetry SDK through hookd's own reqwest client.
//!
//! The SDK's batch processor exports from a thread of its own, outside the tokio runtime:
//! [`RuntimeClient`] hands each export to the runtime and waits for it there. An export
//! that fails is logged by the SDK and dropped; attempts never wait on it.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use url::Url;

use hookd_store::{Claimed, Outcome};

use crate::daemon::trace_context::TraceParent;

/// How spans are encoded (`HOOKD_OTLP_PROTOCOL`, named as `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Protobuf,
    Json,
}

impl Encoding {
    pub fn parse(text: &str) -> Result<Encoding, String> {
        match text.trim() {
            "http/protobuf" => Ok(Encoding::Protobuf),
            "http/json" => Ok(Encoding::Json),
            other => Err(format!(
                "{other:?} is not an OTLP protocol hookd speaks: http/protobuf or http/json"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Protobuf => "http/protobuf",
            Encoding::Json => "http/json",
        }
    }
}

/// Where spans are sent: the endpoint as given when it already names the traces path, else
/// `/v1/traces` under it (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
pub fn traces_url(endpoint: &Url) -> Url {
    if endpoint.path().ends_with("/v1/traces") {
        return endpoint.clone();
    }
    let mut url = endpoint.clone();
    let path = format!("{}/v1/traces", endpoint.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The exporter and the tracer attempts record their spans with.
pub struct Spans {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// An attempt's span, open while the attempt runs.
pub struct AttemptSpan(Span);

impl Spans {
    /// Starts the batch exporter. Call from within the tokio runtime.
    pub fn start(endpoint: &Url, encoding: Encoding) -> Result<Spans, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the OTLP client: {e}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient {
                client,
                runtime: tokio::runtime::Handle::current(),
            })
            .with_endpoint(traces_url(endpoint).as_str())
            .with_protocol(match encoding {
                Encoding::Protobuf => Protocol::HttpBinary,
                Encoding::Json => Protocol::HttpJson,
            })
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("hookd")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("hookd");
        Ok(Spans { provider, tracer })
    }

    /// Opens the span of an attempt of `claimed` starting `at`, and returns it with the
    /// `traceparent` the request carries (the span's own ids).
    pub fn open(&self, claimed: &Claimed, at: SystemTime) -> (AttemptSpan, TraceParent) {
        let parent = claimed
            .traceparent
            .as_deref()
            .and_then(TraceParent::parse)
            .map_or_else(Context::new, |p| {
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(p.trace_id),
                    SpanId::from_bytes(p.span_id),
                    TraceFlags::new(p.flags),
                    true,
                    TraceState::default(),
                ))
            });
        let span = self
            .tracer
            .span_builder(Cow::Borrowed("webhook attempt"))
            .with_kind(SpanKind::Client)
            .with_start_time(at)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("hookd.delivery_id", claimed.delivery_id),
                KeyValue::new("hookd.event_id", claimed.event_id.as_str().to_string()),
                KeyValue::new("hookd.event_type", claimed.event_type.clone()),
                KeyValue::new(
                    "hookd.endpoint_id",
                    claimed.endpoint.id.as_str().to_string(),
                ),
                KeyValue::new("hookd.attempt", i64::from(claimed.attempt)),
            ])
            .start_with_context(&self.tracer, &parent);
        let context = span.span_context();
        let header = TraceParent {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8(),
        };
        (AttemptSpan(span), header)
    }

    /// Sends the spans still buffered and stops the exporter; bounded, so that a collector
    /// that went away cannot hold up shutdown.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "cannot flush the last spans to the OTLP collector");
        }
    }
}

impl AttemptSpan {
    /// Closes the span with what the attempt did.
    pub fn close(
        mut self,
        outcome: Outcome,
        status: Option<u16>,
        error: Option<&str>,
        at: SystemTime,
    ) {
        self.0
            .set_attribute(KeyValue::new("hookd.outcome", outcome.as_str()));
        if let Some(code) = status {
            self.0
                .set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        if outcome != Outcome::Success {
            self.0
                .set_status(Status::error(error.unwrap_or(outcome.as_str()).to_string()));
        }
        self.0.end_with_timestamp(at);
    }
}

/// hookd's reqwest client, for the SDK's export thread: each export runs on the tokio
/// runtime (reqwest needs its reactor) and the thread waits for its answer.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok(answer.body(body)?)
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_table() {
        let cases = [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector/otlp", "http://collector/otlp/v1/traces"),
            ("http://collector/otlp/", "http://collector/otlp/v1/traces"),
            ("https://c.example/v1/traces", "https://c.example/v1/traces"),
        ];
        for (given, want) in cases {
            let url = Url::parse(given).expect("a URL");
            assert_eq!(traces_url(&url).as_str(), want, "{given}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(Encoding::parse("http/protobuf"), Ok(Encoding::Protobuf));
        assert_eq!(Encoding::parse("http/json"), Ok(Encoding::Json));
        assert!(Encoding::parse("grpc")
            .unwrap_err()
            .contains("http/protobuf"));
        for e in [Encoding::Protobuf, Encoding::Json] {
            assert_eq!(Encoding::parse(e.as_str()), Ok(e));
        }
    }
}
