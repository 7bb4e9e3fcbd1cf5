//! A webhook receiver in axum that checks hookd's signatures, answers at once, and does the
//! work in the background, once per `webhook-id`.
//!
//!     WEBHOOK_SECRET=whsec_... cargo run -p hookd-verify --features http --example axum_receiver
//!
//! then register `http://127.0.0.1:3000/webhooks` as an endpoint with that secret.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::mpsc;

#[derive(Clone)]
struct App {
    secret: Arc<str>,
    /// Ids already accepted. In production: a unique key in your database, written in the
    /// same transaction as the job that does the work.
    seen: Arc<Mutex<HashSet<String>>>,
    jobs: mpsc::Sender<(String, Bytes)>,
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // 1. Check the signature over the raw body, before parsing it. For the `toss` scheme,
    //    call hookd_verify::verify_toss instead.
    if let Err(e) = hookd_verify::verify_standard(&app.secret, &headers, &body) {
        eprintln!("refused a webhook: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    // 2. Dedupe: a retry or a resend carries the same webhook-id. Answer 2xx again, do
    //    nothing again.
    let id = match headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_string(),
        None => return StatusCode::BAD_REQUEST,
    };
    if !app.seen.lock().unwrap().insert(id.clone()) {
        return StatusCode::OK;
    }
    // 3. Hand the work over and answer at once: hookd counts a slow answer as a failure
    //    (10 s by default) and sends the webhook again.
    match app.jobs.try_send((id.clone(), body)) {
        Ok(()) => StatusCode::OK,
        Err(_) => {
            // Queue full: forget the id so that hookd's retry is accepted later.
            app.seen.lock().unwrap().remove(&id);
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[tokio::main]
async fn main() {
    let secret =
        std::env::var("WEBHOOK_SECRET").expect("set WEBHOOK_SECRET to the endpoint's secret");
    let (jobs, mut queue) = mpsc::channel::<(String, Bytes)>(1024);
    tokio::spawn(async move {
        while let Some((id, body)) = queue.recv().await {
            // The slow part: update orders, send e-mails...
            println!("{id}: {}", String::from_utf8_lossy(&body));
        }
    });
    let app = App {
        secret: secret.into(),
        seen: Arc::default(),
        jobs,
    };
    let router = Router::new()
        .route("/webhooks", post(webhook))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .expect("bind 127.0.0.1:3000");
    axum::serve(listener, router).await.expect("serve");
}
