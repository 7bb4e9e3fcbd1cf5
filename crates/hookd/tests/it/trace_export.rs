//! Trace context across the hop: a producer's `traceparent` (the API's request header, the
//! outbox column) travels with its event, every attempt sends one in the same trace, and,
//! with `otlp_endpoint` set, each attempt's span reaches a real OTLP/HTTP collector (one
//! served here, decoding what hookd sends as the OTLP protobuf it is) as the child of the
//! producer's span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use hookd_testkit::{Backend, Receiver, Reply, TestDb};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use serde_json::json;

use crate::support::{test_config, TestApp};

hookd_testkit::each_backend!(
    attempts_join_the_producers_trace_and_export_their_spans,
    attempts_carry_a_traceparent_without_export,
);

/// The API's producer and the outbox's: W3C-style ids, each its own trace.
const FROM_API: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const FROM_OUTBOX: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The parts of a `traceparent`: version, trace id, parent id, flags.
fn parts(traceparent: &str) -> (String, String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "a traceparent: {traceparent}");
    assert_eq!(p[0], "00");
    assert_eq!(
        (p[1].len(), p[2].len(), p[3].len()),
        (32, 16, 2),
        "{traceparent}"
    );
    (p[0].into(), p[1].into(), p[2].into(), p[3].into())
}

/// An OTLP/HTTP collector: keeps every span it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    Bytes::new()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    /// Spans by their span id, in hex.
    fn by_span_id(&self) -> HashMap<String, Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| (hex::encode(&s.span_id), s.clone()))
            .collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .clone()?;
    match value.value? {
        AnyValue::StringValue(s) => Some(s),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Three events: one through the API with a `traceparent` header, one through the outbox
/// with the column (its first attempt fails: both attempts join the trace), one with none.
async fn send_three(app: &TestApp, db: &TestDb) -> Receiver {
    let receiver = Receiver::per_event(|id, nth| {
        if id == "from-outbox" && nth == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    app.endpoint(json!({ "url": receiver.url(), "retry_schedule": ["10ms"] }))
        .await;
    let answer = app
        .request(
            Method::POST,
            "/v1/events",
            &[("traceparent", FROM_API)],
            Some(json!({ "event_type": "purchase", "event_id": "from-api", "payload": {} })),
        )
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, traceparent) VALUES \
         ('from-outbox', 'purchase', '{{}}', '{FROM_OUTBOX}'), \
         ('untraced', 'purchase', '{{}}', NULL)"
    ))
    .await;
    hookd_testkit::wait_until(crate::support::WAIT, "three deliveries", || async {
        (receiver.ok_count() >= 3).then_some(())
    })
    .await;
    receiver
}

async fn attempts_join_the_producers_trace_and_export_their_spans(backend: Backend) {
    let db = TestDb::new(backend).await;
    let collector = Collector::start().await;
    let mut config = test_config(&db);
    config.otlp_endpoint = Some(collector.url.parse().unwrap());
    let app = TestApp::spawn_with(config).await;
    let receiver = send_three(&app, &db).await;
    // Stopping flushes the spans still batched.
    app.stop().await;

    let spans = collector.by_span_id();
    let requests = receiver.by_id();
    assert_eq!(
        requests["from-outbox"].len(),
        2,
        "a failure, then the retry"
    );
    for (event, producer) in [
        ("from-api", Some(FROM_API)),
        ("from-outbox", Some(FROM_OUTBOX)),
        ("untraced", None),
    ] {
        for (i, request) in requests[event].iter().enumerate() {
            let header = request.header("traceparent").expect("a traceparent");
            let (_, trace_id, span_id, _) = parts(header);
            let span = spans.get(&span_id).unwrap_or_else(|| {
                panic!("{event}: no span {span_id} among {} exported", spans.len())
            });
            assert_eq!(
                hex::encode(&span.trace_id),
                trace_id,
                "{event}: the header's trace"
            );
            assert_eq!(attribute(span, "hookd.event_id").as_deref(), Some(event));
            assert_eq!(attribute(span, "hookd.attempt"), Some((i + 1).to_string()));
            match producer {
                Some(producer) => {
                    let (_, producer_trace, producer_span, _) = parts(producer);
                    assert_eq!(trace_id, producer_trace, "{event}: the producer's trace");
                    assert_eq!(
                        hex::encode(&span.parent_span_id),
                        producer_span,
                        "{event}: a child of the producer's span"
                    );
                }
                None => assert!(span.parent_span_id.is_empty(), "{event}: a root span"),
            }
        }
    }
    let failed = &spans[&parts(requests["from-outbox"][0].header("traceparent").unwrap()).2];
    assert_eq!(
        attribute(failed, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        attribute(failed, "hookd.outcome").as_deref(),
        Some("http_error")
    );
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "status error"
    );
}

async fn attempts_carry_a_traceparent_without_export(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = send_three(&app, &db).await;
    let requests = receiver.by_id();
    let trace = |event: &str, i: usize| {
        parts(
            requests[event][i]
                .header("traceparent")
                .expect("a traceparent"),
        )
    };
    assert_eq!(trace("from-api", 0).1, parts(FROM_API).1);
    assert_eq!(trace("from-outbox", 0).1, parts(FROM_OUTBOX).1);
    assert_eq!(trace("from-outbox", 1).1, parts(FROM_OUTBOX).1);
    assert_ne!(
        trace("from-outbox", 0).2,
        trace("from-outbox", 1).2,
        "each attempt its own span"
    );
    assert_ne!(
        trace("from-api", 0).2,
        parts(FROM_API).2,
        "not the producer's span"
    );
    assert_ne!(trace("untraced", 0).1, "0".repeat(32));
    app.stop().await;
}
