//! An HTTP forwarder on a free loopback port in front of a real HTTP server, that a
//! test can make fail: answer `503` instead of forwarding, or forward and then answer
//! `500` (the server did the work, the client never hears of it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use ixp_core::axum::body::{to_bytes, Body};
use ixp_core::axum::http::{Request, Response, StatusCode};
use ixp_core::axum::Router;
use tokio::task::JoinHandle;

/// What the forwarder does; change it while it runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer `503` to this many requests (counted down) without forwarding them.
    pub fail_next: AtomicUsize,
    /// Forward this many requests (after `fail_next` ran out), then answer `500`.
    pub lose_response_next: AtomicUsize,
    /// Answer `503` to every request while set.
    pub fail_all: AtomicBool,
    /// Requests seen.
    pub requests: AtomicUsize,
    /// Requests answered with an injected failure.
    pub injected: AtomicUsize,
}

/// The forwarder.
#[derive(Debug)]
pub struct FaultyHttp {
    address: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl FaultyHttp {
    /// Forwards a free loopback port to `target` (e.g. `http://127.0.0.1:9200`).
    pub async fn start(target: &str) -> std::io::Result<FaultyHttp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let client = reqwest::Client::new();
        let target = target.trim_end_matches('/').to_owned();
        let state = (faults.clone(), client, target);
        let app = Router::new().fallback(move |request: Request<Body>| {
            let (faults, client, target) = state.clone();
            async move { forward(request, &faults, &client, &target).await }
        });
        let task = tokio::spawn(async move {
            let _ = ixp_core::axum::serve(listener, app).await;
        });
        Ok(FaultyHttp {
            address,
            faults,
            task,
        })
    }

    /// The URL clients use, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl Drop for FaultyHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn reply(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
}

async fn forward(
    request: Request<Body>,
    faults: &Faults,
    client: &reqwest::Client,
    target: &str,
) -> Response<Body> {
    faults.requests.fetch_add(1, Ordering::SeqCst);
    if faults.fail_all.load(Ordering::SeqCst) || take_one(&faults.fail_next) {
        faults.injected.fetch_add(1, Ordering::SeqCst);
        return reply(StatusCode::SERVICE_UNAVAILABLE, "injected failure");
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, 64 << 20).await else {
        return reply(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "method");
    };
    let mut outgoing = client.request(method, format!("{target}{path}")).body(body);
    for name in ["content-type", "authorization"] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => return reply(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap_or_default();
    if take_one(&faults.lose_response_next) {
        faults.injected.fetch_add(1, Ordering::SeqCst);
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "injected: response lost");
    }
    reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        bytes,
    )
}
