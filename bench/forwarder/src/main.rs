//! The bare forwarder: the benchmark's workload with nothing else.
//!
//! `POST /hook` parses the signup payload, maps the same four fields as the benchmark
//! recipes (greeting = "Hi " + user.first_name, email = user.email, event_id,
//! plan = plan.tier), POSTs them as JSON to the sink through one shared keep-alive
//! reqwest client and answers with the sink's status and body. It stores nothing: it is
//! this machine's limit for the webhook → sink → answer hop, the figure Enlace is
//! compared with.
//!
//! ```text
//! enlace-bench-forwarder [--listen 127.0.0.1:18090] [--sink http://127.0.0.1:18080/sink]
//! ```
//! or `FORWARDER_LISTEN` / `FORWARDER_SINK` in the environment (arguments win).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const DEFAULT_LISTEN: &str = "127.0.0.1:18090";
const DEFAULT_SINK: &str = "http://127.0.0.1:18080/sink";

#[derive(Clone)]
struct AppState {
    client: reqwest::Client,
    sink: reqwest::Url,
}

struct Config {
    listen: SocketAddr,
    sink: reqwest::Url,
}

fn usage() -> ! {
    eprintln!("usage: enlace-bench-forwarder [--listen ADDR:PORT] [--sink URL]");
    eprintln!("       (or FORWARDER_LISTEN / FORWARDER_SINK; defaults {DEFAULT_LISTEN}, {DEFAULT_SINK})");
    std::process::exit(2);
}

fn config() -> Config {
    let mut listen = std::env::var("FORWARDER_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_string());
    let mut sink = std::env::var("FORWARDER_SINK").unwrap_or_else(|_| DEFAULT_SINK.to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).unwrap_or_else(|| usage());
        match key.as_str() {
            "--listen" => listen = value(),
            "--sink" => sink = value(),
            "-h" | "--help" => usage(),
            _ => {
                eprintln!("unknown argument: {arg}");
                usage()
            }
        }
    }
    let listen = listen.parse().unwrap_or_else(|e| {
        eprintln!("--listen {listen}: {e}");
        usage()
    });
    let sink = reqwest::Url::parse(&sink).unwrap_or_else(|e| {
        eprintln!("--sink {sink}: {e}");
        usage()
    });
    Config { listen, sink }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The mapping, the same four fields as `bench/recipes/bench-*.yaml`.
fn map(payload: &Value) -> Value {
    json!({
        "greeting": format!("Hi {}", text(field(payload, &["user", "first_name"]))),
        "email": field(payload, &["user", "email"]),
        "event_id": field(payload, &["event_id"]),
        "plan": field(payload, &["plan", "tier"]),
    })
}

async fn hook(State(state): State<AppState>, body: Bytes) -> Response {
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid JSON: {e}\n")).into_response(),
    };
    let mapped = map(&payload);
    let sent = state.client.post(state.sink.clone()).json(&mapped).send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("sink: {e}\n")).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match resp.bytes().await {
        Ok(bytes) => {
            let content_type = content_type.unwrap_or_else(|| "application/octet-stream".to_string());
            (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("sink body: {e}\n")).into_response(),
    }
}

#[tokio::main]
async fn main() {
    let cfg = config();
    // reqwest is built with `rustls-no-provider` in this workspace: without a provider,
    // building a Client panics even if only plain http is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the HTTP client");
    let state = AppState { client, sink: cfg.sink.clone() };
    let app = Router::new().route("/hook", post(hook)).with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap_or_else(|e| {
        eprintln!("binding {}: {e}", cfg.listen);
        std::process::exit(1);
    });
    eprintln!("forwarder listening on http://{}/hook, sink {}", cfg.listen, cfg.sink);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.expect("serving");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_four_fields() {
        let payload: Value =
            serde_json::from_str(r#"{"event_id":"evt_1","user":{"first_name":"Ada","email":"ada@example.com"},"plan":{"tier":"pro"}}"#)
                .unwrap();
        assert_eq!(map(&payload), json!({"greeting": "Hi Ada", "email": "ada@example.com", "event_id": "evt_1", "plan": "pro"}));
    }
}
