//! The HTTP front (feature `http`, on by default): [`IxpServer`] serves the plugins'
//! routes and the server's own endpoints on axum.
//!
//! * `GET /health`: every plugin's health and the aggregate as JSON; 200 when healthy or
//!   degraded, 503 when unhealthy.
//! * `GET /health/live`: 200 while the process answers.
//! * `GET /health/ready`: 200 once every plugin is running, 503 before (and after stop).
//! * `GET /plugins`: name, version, description, state and dependencies of each plugin.
//!
//! Plugins mount routes and middleware through
//! [`PluginContext::http`](crate::PluginContext::http); what a plugin mounted disappears
//! when it stops, and a path another plugin (or the server) already serves is refused
//! with a [`RouteError`].
//!
//! Every request publishes `request.started` ([`RequestStarted`]) and
//! `request.completed` ([`RequestCompleted`]: method, path, status, duration, response
//! size); a handler that panics answers 500, and a panic or a 5xx answer publishes
//! `error.occurred`.
//!
//! ```
//! use axum::routing::get;
//! use ixp_core::http::IxpServer;
//! use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};
//!
//! #[ixp_plugin(name = "hello-http-plugin", version = "1.0.0")]
//! struct HelloHttp;
//!
//! impl Plugin for HelloHttp {
//!     type Config = NoConfig;
//!     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
//!         Ok(HelloHttp)
//!     }
//!     async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
//!         ctx.http().route("/hello", get(|| async { "hello" }))?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = IxpServer::builder()
//!     .catalog(ixp_core::Catalog::new())
//!     .plugin::<HelloHttp>(NoConfig {})
//!     .build()?;
//! server.start().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(listener, async { let _ = stopped.await; }));
//! // ... requests to http://{addr}/hello ...
//! # let _ = addr;
//! stop.send(()).ok();
//! serving.await??;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::events::{panic_message, ErrorOccurred, EventBus, Listening, TypedEvent};
use crate::health::HealthStatus;
use crate::host::{Host, HostBuilder, HostError, ServerHandle};
use crate::problem::CheckReport;

/// Paths the server itself serves.
pub const RESERVED_PATHS: [&str; 4] = ["/health", "/health/live", "/health/ready", "/plugins"];

/// Why a route could not be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Another plugin serves the same path.
    #[error(
        "plugin `{plugin}` cannot mount `{path}`: plugin `{owner}` already serves `{existing}`"
    )]
    Conflict {
        /// The plugin mounting.
        plugin: String,
        /// The path it asked for.
        path: String,
        /// The plugin that has it.
        owner: String,
        /// The path as the owner wrote it.
        existing: String,
    },
    /// The server serves that path itself.
    #[error("plugin `{plugin}` cannot mount `{path}`: the server serves it (reserved: /health, /health/live, /health/ready, /plugins)")]
    Reserved {
        /// The plugin mounting.
        plugin: String,
        /// The path.
        path: String,
    },
    /// The path is not valid for the router.
    #[error("plugin `{plugin}` cannot mount `{path}`: {reason}")]
    Invalid {
        /// The plugin mounting.
        plugin: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The payload of `request.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStarted {
    /// Request number, unique within the process. Only requests that publish request
    /// events are numbered, so the numbers skip those served while nobody subscribed.
    pub id: u64,
    /// HTTP method.
    pub method: String,
    /// Request path (without query).
    pub path: String,
}

impl TypedEvent for RequestStarted {
    const TOPIC: &'static str = "request.started";
}

/// The payload of `request.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestCompleted {
    /// Request number, the same as in `request.started`.
    pub id: u64,
    /// HTTP method.
    pub method: String,
    /// Request path (without query).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Time to the response head, in milliseconds.
    pub duration_ms: f64,
    /// Response body size in bytes, when known before streaming.
    pub response_size: Option<u64>,
}

impl TypedEvent for RequestCompleted {
    const TOPIC: &'static str = "request.completed";
}

type MiddlewareFn = Arc<dyn Fn(Request, Next) -> BoxFuture<'static, Response> + Send + Sync>;

struct RouteEntry {
    owner: Arc<str>,
    path: String,
    shape: String,
    method_router: MethodRouter,
}

struct MiddlewareEntry {
    owner: Arc<str>,
    middleware: MiddlewareFn,
}

struct RoutesInner {
    routes: Mutex<Vec<RouteEntry>>,
    middleware: Mutex<Vec<MiddlewareEntry>>,
    /// The router requests go through: swapped whole on every mount and unmount, read
    /// without a lock.
    current: arc_swap::ArcSwap<Router>,
    server: ServerHandle,
    health: Arc<HealthCache>,
}

/// The last answer of `GET /health`, reused for `server.health_cache`: the plugins'
/// checks run at most once per period, one run at a time.
#[derive(Default)]
struct HealthCache {
    answer: RwLock<Option<(Instant, StatusCode, axum::body::Bytes)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl HealthCache {
    fn fresh(&self, ttl: Duration) -> Option<Response> {
        let answer = self.answer.read().unwrap_or_else(|p| p.into_inner());
        let (at, code, body) = answer.as_ref()?;
        (at.elapsed() < ttl).then(|| json_response(*code, body.clone()))
    }
}

/// The routes and middleware plugins contribute. Cheap to clone; the one in a plugin's
/// context mounts for that plugin, and the host unmounts it when the plugin stops.
#[derive(Clone)]
pub struct HttpRoutes {
    inner: Arc<RoutesInner>,
    owner: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRoutes")
            .field("owner", &self.owner)
            .field("paths", &self.paths())
            .finish()
    }
}

/// The shape of a path for conflict detection: parameter names do not matter.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with("{*") {
                "{*}"
            } else if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl HttpRoutes {
    pub(crate) fn new(server: ServerHandle) -> Self {
        let routes = Self {
            inner: Arc::new(RoutesInner {
                routes: Mutex::new(Vec::new()),
                middleware: Mutex::new(Vec::new()),
                current: arc_swap::ArcSwap::from_pointee(Router::new()),
                server,
                health: Arc::default(),
            }),
            owner: None,
        };
        routes.rebuild();
        routes
    }

    pub(crate) fn scoped(&self, owner: impl Into<Arc<str>>) -> Self {
        Self {
            inner: self.inner.clone(),
            owner: Some(owner.into()),
        }
    }

    fn owner_name(&self) -> Arc<str> {
        self.owner.clone().unwrap_or_else(|| "application".into())
    }

    /// Mounts `method_router` at `path` (axum syntax: `/users/{id}`, `/files/{*rest}`).
    pub fn route(&self, path: &str, method_router: MethodRouter) -> Result<(), RouteError> {
        let plugin = self.owner_name();
        let invalid = |reason: &str| RouteError::Invalid {
            plugin: plugin.to_string(),
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if !path.starts_with('/') {
            return Err(invalid("a path must start with `/`"));
        }
        if path.split('/').any(|s| s.starts_with(':')) {
            return Err(invalid("write path parameters as `{name}`, not `:name`"));
        }
        let new_shape = shape(path);
        if RESERVED_PATHS.iter().any(|r| shape(r) == new_shape) {
            return Err(RouteError::Reserved {
                plugin: plugin.to_string(),
                path: path.to_owned(),
            });
        }
        let mut routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = routes.iter().find(|r| r.shape == new_shape) {
            return Err(RouteError::Conflict {
                plugin: plugin.to_string(),
                path: path.to_owned(),
                owner: existing.owner.to_string(),
                existing: existing.path.clone(),
            });
        }
        // axum panics on paths it cannot route; try the new table first.
        let mut candidate = Router::new();
        for entry in routes.iter() {
            candidate = candidate.route(&entry.path, entry.method_router.clone());
        }
        let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
            candidate.route(path, method_router.clone())
        }));
        if let Err(panic) = attempt {
            return Err(invalid(&panic_message(&*panic)));
        }
        routes.push(RouteEntry {
            owner: plugin,
            path: path.to_owned(),
            shape: new_shape,
            method_router,
        });
        drop(routes);
        self.rebuild();
        Ok(())
    }

    /// Adds a middleware around every request (plugin routes and the server's own),
    /// in the order plugins start: the first added is the outermost.
    ///
    /// ```
    /// # use ixp_core::http::HttpRoutes;
    /// # fn mount(http: &HttpRoutes) {
    /// http.middleware(|request, next: axum::middleware::Next| async move {
    ///     let mut response = next.run(request).await;
    ///     response.headers_mut().insert("x-powered-by", "ixp".parse().unwrap());
    ///     response
    /// });
    /// # }
    /// ```
    pub fn middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let middleware: MiddlewareFn = Arc::new(move |req, next| middleware(req, next).boxed());
        self.inner
            .middleware
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(MiddlewareEntry {
                owner: self.owner_name(),
                middleware,
            });
        self.rebuild();
    }

    /// Unmounts everything `owner` mounted; returns how many routes and middleware went.
    pub fn remove_owner(&self, owner: &str) -> usize {
        let mut removed = 0;
        {
            let mut routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
            let before = routes.len();
            routes.retain(|r| &*r.owner != owner);
            removed += before - routes.len();
            let mut middleware = self
                .inner
                .middleware
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let before = middleware.len();
            middleware.retain(|m| &*m.owner != owner);
            removed += before - middleware.len();
        }
        if removed > 0 {
            self.rebuild();
        }
        removed
    }

    /// The mounted paths and who mounted them.
    pub fn paths(&self) -> Vec<(String, String)> {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| (r.path.clone(), r.owner.to_string()))
            .collect()
    }

    fn rebuild(&self) {
        let server = self.inner.server.clone();
        let cache = self.inner.health.clone();
        let mut router = Router::new()
            .route(
                "/health",
                get(move |State(server): State<ServerHandle>| health(server, cache.clone())),
            )
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/plugins", get(plugins))
            .with_state(server);
        for entry in self
            .inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            router = router.route(&entry.path, entry.method_router.clone());
        }
        router = router.fallback(not_found);
        let middleware = self
            .inner
            .middleware
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for entry in middleware.iter().rev() {
            let m = entry.middleware.clone();
            router = router.layer(axum::middleware::from_fn(
                move |req: Request, next: Next| {
                    let m = m.clone();
                    async move { m(req, next).await }
                },
            ));
        }
        self.inner.current.store(Arc::new(router));
    }

    fn current(&self) -> Router {
        Router::clone(&self.inner.current.load())
    }

    /// The whole application: request events and panic handling around the current
    /// routes (which follow every mount and unmount).
    pub fn app(&self, events: EventBus) -> Router {
        Router::new().fallback_service(self.service(events))
    }

    /// The same as [`app`](Self::app) as a bare service (what [`IxpServer::serve`]
    /// serves: no outer router to pass through).
    fn service(&self, events: EventBus) -> IxpService {
        IxpService {
            shared: Arc::new(ServiceShared {
                routes: self.clone(),
                events,
                listening: Listening::new([RequestStarted::TOPIC, RequestCompleted::TOPIC]),
            }),
        }
    }
}

/// The service every request goes through ([`IxpServer::service`]): request events
/// and panic handling around the current routes (one layer, no middleware stack), which
/// follow every mount and unmount. Cheap to clone.
#[derive(Clone)]
pub struct IxpService {
    /// What every request reads, behind one reference count (one increment per request).
    shared: Arc<ServiceShared>,
}

struct ServiceShared {
    routes: HttpRoutes,
    events: EventBus,
    /// Whether `request.started` and `request.completed` have subscribers on `events`.
    listening: Listening<2>,
}

impl std::fmt::Debug for IxpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IxpService")
            .field("routes", &self.shared.routes)
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Request> for IxpService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut router = self.shared.routes.current();
        // Events nobody receives are not built (a request then costs no allocation for
        // them, nor a clock read, nor a request number: the counter is shared by every
        // thread); whether anyone listens is decided as the request starts (from an
        // answer kept until the bus's subscriptions change: one atomic load).
        let listening = self.shared.listening.on(&self.shared.events);
        let method = request.method().clone();
        let uri = request.uri().clone();
        // `request.completed`'s duration counts from here, before routing.
        let started = listening[1].then(Instant::now);
        let handling = Handling::new(&mut router, request);
        let shared = self.shared.clone();
        if listening == [false, false] {
            return Unobserved {
                shared,
                method,
                uri,
                step: UnobservedStep::Handling(handling),
            }
            .boxed();
        }
        request_events(shared, method, uri, started, handling, listening[0])
            .map(Ok)
            .boxed()
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// The router's future of a request.
type RouterFuture = <Router as tower_service::Service<Request>>::Future;

/// A request's handling: the router's future with panics caught, or the panic of
/// routing it. Resolves to the answer or the panic.
#[allow(clippy::large_enum_variant)] // part of the request's boxed future: a box of its own would be one more allocation per request
enum Handling {
    Routed(futures::future::CatchUnwind<AssertUnwindSafe<RouterFuture>>),
    RoutingPanicked(Box<dyn std::any::Any + Send>),
}

impl Handling {
    /// `request` routed now, handled when polled: an axum route calls its service on
    /// the first poll.
    fn new(router: &mut Router, request: Request) -> Self {
        let routed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tower_service::Service::call(router, request)
        }));
        match routed {
            Ok(future) => Handling::Routed(AssertUnwindSafe(future).catch_unwind()),
            Err(panic) => Handling::RoutingPanicked(panic),
        }
    }
}

impl Future for Handling {
    type Output = std::thread::Result<Response>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handling::Routed(future) => future.poll_unpin(cx).map(|handled| {
                handled.map(|answer| match answer {
                    Ok(response) => response,
                    Err(infallible) => match infallible {},
                })
            }),
            Handling::RoutingPanicked(panic) => {
                Poll::Ready(Err(std::mem::replace(panic, Box::new(()))))
            }
        }
    }
}

/// The future of a request nobody subscribed the request events of: its
/// [`Handling`], and an `error.occurred` for a panic or a 5xx answer.
///
/// Written by hand: it is boxed for every request, and as an `async fn` its state was
/// ~1.5 KB (the request held by value at every level), over the allocator's per-thread
/// cache (`scripts/bench-http-cachegrind.sh`, docs/performance.md).
struct Unobserved {
    shared: Arc<ServiceShared>,
    method: Method,
    uri: Uri,
    step: UnobservedStep,
}

enum UnobservedStep {
    Handling(Handling),
    /// The request failed: its `error.occurred` is being published; then `response`.
    Reporting {
        response: Response,
        publishing: BoxFuture<'static, usize>,
    },
    Done,
}

impl Unobserved {
    /// The answer once handled; `None` while its `error.occurred` is to be published.
    fn handled(&mut self, handled: std::thread::Result<Response>) -> Option<Response> {
        let (response, error) = outcome(handled, &self.method, &self.uri);
        let Some(message) = error else {
            self.step = UnobservedStep::Done;
            return Some(response);
        };
        let events = self.shared.events.clone();
        self.step = UnobservedStep::Reporting {
            response,
            publishing: async move { publish_error(&events, message).await }.boxed(),
        };
        None
    }
}

impl Future for Unobserved {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let handled = match &mut this.step {
                UnobservedStep::Handling(handling) => {
                    let Poll::Ready(handled) = handling.poll_unpin(cx) else {
                        return Poll::Pending;
                    };
                    handled
                }
                UnobservedStep::Reporting { publishing, .. } => {
                    if publishing.poll_unpin(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match std::mem::replace(&mut this.step, UnobservedStep::Done) {
                        UnobservedStep::Reporting { response, .. } => {
                            return Poll::Ready(Ok(response))
                        }
                        _ => continue,
                    }
                }
                // Polled after it answered: nothing left to answer with.
                UnobservedStep::Done => return Poll::Ready(Ok(internal_error())),
            };
            if let Some(response) = this.handled(handled) {
                return Poll::Ready(Ok(response));
            }
        }
    }
}

/// The 500 answer of a request whose handler panicked (or of a request future polled
/// after it answered).
fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": "internal server error"})),
    )
        .into_response()
}

/// A handled request (or its panic): the answer, and the message of its
/// `error.occurred` when it failed (the panic, or else the 5xx answer).
fn outcome(
    handled: std::thread::Result<Response>,
    method: &Method,
    uri: &Uri,
) -> (Response, Option<String>) {
    match handled {
        Ok(response) => {
            let status = response.status();
            let error = status
                .is_server_error()
                .then(|| format!("{method} {} answered {status}", uri.path()));
            (response, error)
        }
        Err(panic) => {
            let path = uri.path();
            let message = format!(
                "handler of {method} {path} panicked: {}",
                panic_message(&*panic)
            );
            tracing::error!(%method, %path, "{message}");
            (internal_error(), Some(message))
        }
    }
}

/// Publishes the `error.occurred` of a failed request.
async fn publish_error(events: &EventBus, message: String) -> usize {
    events
        .publish(ErrorOccurred {
            source: "http".into(),
            plugin: None,
            topic: None,
            message,
        })
        .await
}

/// A request with subscribers on `request.started` (`on_started`) or
/// `request.completed` (`started` is when the request came in).
///
/// Its state is boxed for every request and must stay under the allocator's
/// per-thread cache (1,032 bytes; past it every request took `malloc`'s slow path,
/// docs/performance.md): 800 bytes. So it takes the request routed ([`Handling`]) and
/// awaits that in place (moved into an inner future, it would be held twice), and is a
/// function returning an `async move` block, which uses what it captured in place (an
/// `async fn` moves its arguments into locals, and its state held both: 1,208 bytes).
#[allow(clippy::manual_async_fn)] // see above: as an `async fn` its state is 1.5x larger
fn request_events(
    shared: Arc<ServiceShared>,
    method: Method,
    uri: Uri,
    started: Option<Instant>,
    mut handling: Handling,
    on_started: bool,
) -> impl Future<Output = Response> {
    async move {
        let events = &shared.events;
        let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
        if on_started {
            let started = RequestStarted {
                id,
                method: method.as_str().to_owned(),
                path: uri.path().to_owned(),
            };
            events.publish(started).await;
        }
        // One `error.occurred` per failed request: the panic, or else the 5xx answer.
        let handled = (&mut handling).await;
        let (response, error) = outcome(handled, &method, &uri);
        if let Some(message) = error {
            publish_error(events, message).await;
        }
        if let Some(started) = started {
            let completed = RequestCompleted {
                id,
                method: method.as_str().to_owned(),
                path: uri.path().to_owned(),
                status: response.status().as_u16(),
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                response_size: response.body().size_hint().exact(),
            };
            events.publish(completed).await;
        }
        response
    }
}

async fn health(server: ServerHandle, cache: Arc<HealthCache>) -> Response {
    let ttl = server.health_cache();
    if ttl.is_zero() {
        let (code, body) = health_answer(&server).await;
        return json_response(code, body);
    }
    if let Some(response) = cache.fresh(ttl) {
        return response;
    }
    // One run at a time: the calls that waited here take its answer.
    let _refresh = cache.refresh.lock().await;
    if let Some(response) = cache.fresh(ttl) {
        return response;
    }
    let (code, body) = health_answer(&server).await;
    *cache.answer.write().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), code, body.clone()));
    json_response(code, body)
}

/// Runs every plugin's health check: the status code and JSON body of `GET /health`.
async fn health_answer(server: &ServerHandle) -> (StatusCode, axum::body::Bytes) {
    let report = server.health().await;
    let code = match report.status {
        HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Healthy | HealthStatus::Degraded => StatusCode::OK,
    };
    match serde_json::to_vec(&report) {
        Ok(body) => (code, body.into()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": format!("health report: {e}")})
                .to_string()
                .into(),
        ),
    }
}

fn json_response(code: StatusCode, body: axum::body::Bytes) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn live() -> Response {
    Json(serde_json::json!({"status": "alive"})).into_response()
}

async fn ready(State(server): State<ServerHandle>) -> Response {
    if server.is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let states: serde_json::Map<String, serde_json::Value> = server
            .plugins()
            .into_iter()
            .map(|p| (p.name, serde_json::Value::String(p.state.to_string())))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "plugins": states})),
        )
            .into_response()
    }
}

async fn plugins(State(server): State<ServerHandle>) -> Response {
    Json(server.plugins()).into_response()
}

async fn not_found(request: Request<Body>) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "not found", "path": request.uri().path()})),
    )
        .into_response()
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugins did not start.
    #[error(transparent)]
    Start(HostError),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// Requests were still in flight when the shutdown deadline passed.
    #[error("shutdown took longer than {}: in-flight requests were abandoned", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// Some plugins did not stop cleanly.
    #[error(transparent)]
    Stop(HostError),
}

/// A host with its HTTP front: the TypeScript SDK's `createIXPServer`.
#[derive(Clone, Debug)]
pub struct IxpServer {
    host: Host,
}

/// Builds an [`IxpServer`]; the same options as [`HostBuilder`].
#[derive(Debug)]
pub struct IxpServerBuilder {
    builder: HostBuilder,
}

impl IxpServerBuilder {
    /// Uses this catalog instead of every linked plugin.
    pub fn catalog(mut self, catalog: crate::Catalog) -> Self {
        self.builder = self.builder.catalog(catalog);
        self
    }

    /// Uses this configuration.
    pub fn config(mut self, config: crate::IxpConfig) -> Self {
        self.builder = self.builder.config(config);
        self
    }

    /// Registers a plugin with a typed config (`server.registerPlugin(new X(), config)`).
    pub fn plugin<P: crate::Plugin>(mut self, config: P::Config) -> Self {
        self.builder = self.builder.plugin::<P>(config);
        self
    }

    /// Adds a plugin type whose config comes from the configuration.
    pub fn plugin_type<P: crate::Plugin>(mut self) -> Self {
        self.builder = self.builder.plugin_type::<P>();
        self
    }

    /// Uses this event bus.
    pub fn events(mut self, events: EventBus) -> Self {
        self.builder = self.builder.events(events);
        self
    }

    /// Runs the start-up check and builds the server.
    pub fn build(self) -> Result<IxpServer, CheckReport> {
        Ok(IxpServer {
            host: self.builder.build()?,
        })
    }
}

impl IxpServer {
    /// A builder over every linked plugin and the default config.
    pub fn builder() -> IxpServerBuilder {
        IxpServerBuilder {
            builder: Host::builder(),
        }
    }

    /// A server for an existing host.
    pub fn new(host: Host) -> Self {
        Self { host }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The application router (for `tower::ServiceExt::oneshot` in tests, or to nest in
    /// a larger axum app).
    pub fn router(&self) -> Router {
        self.host.http().app(self.host.events().clone())
    }

    /// The application as the service [`serve`](Self::serve) serves: for serving it
    /// over a transport of your own (with `axum::serve` on another listener, or
    /// `hyper` directly). Unlike [`router`](Self::router) it has no outer router.
    /// Starting and stopping the plugins stays with you ([`start`](Self::start),
    /// [`stop`](Self::stop)).
    ///
    /// ```
    /// use axum::body::Body;
    /// use axum::http::{Request, StatusCode};
    /// use ixp_core::http::IxpServer;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = IxpServer::builder().catalog(ixp_core::Catalog::new()).build()?;
    /// server.start().await?;
    /// let mut service = server.service();
    /// let request = Request::get("/health/live").body(Body::empty())?;
    /// let response = service.call(request).await?;
    /// assert_eq!(response.status(), StatusCode::OK);
    /// server.stop().await?;
    /// # Ok(()) }
    /// ```
    pub fn service(&self) -> IxpService {
        self.host.http().service(self.host.events().clone())
    }

    /// Initializes and starts the plugins.
    pub async fn start(&self) -> Result<(), HostError> {
        self.host.launch().await
    }

    /// Stops the plugins.
    pub async fn stop(&self) -> Result<(), HostError> {
        self.host.stop().await
    }

    /// Binds the configured `server.host:server.port`.
    pub async fn listen(&self) -> Result<TcpListener, ServeError> {
        let settings = self.host.config().server();
        let address = format!("{}:{}", settings.host, settings.port);
        TcpListener::bind(&address)
            .await
            .map_err(|source| ServeError::Bind { address, source })
    }

    /// Serves on `listener` until `shutdown` resolves or a plugin asks for shutdown,
    /// starting the plugins first if needed. Then it stops accepting, lets in-flight
    /// requests finish within `server.shutdown_timeout`, and stops the plugins in reverse
    /// dependency order.
    ///
    /// `shutdown` is watched from the start, while the plugins start too (so a signal
    /// handler it installs is in place then): if it resolves before they have all
    /// started, the start is cut short (the hook running then is aborted), nothing is
    /// served, and the plugins are stopped: those started with their `stop` hook, the
    /// one cut short too.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = Box::pin(shutdown);
        if !self.host.is_ready() {
            let launched = tokio::select! {
                biased;
                launched = self.host.launch() => Some(launched),
                () = &mut shutdown => None,
            };
            match launched {
                Some(launched) => launched.map_err(ServeError::Start)?,
                None => {
                    tracing::info!(
                        "shutdown requested while the plugins start: stopping those started"
                    );
                    self.host.stop().await.map_err(ServeError::Stop)?;
                    tracing::info!("stopped");
                    return Ok(());
                }
            }
        }
        let deadline = self.host.config().server().shutdown_timeout;
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let host = self.host.clone();
        let trigger = async move {
            tokio::select! {
                () = shutdown => {}
                () = host.shutdown_requested() => {}
            }
            let _ = signalled_tx.send(());
        };
        let app = self.service();
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "listening");
        }
        let app = axum::ServiceExt::<Request>::into_make_service(app);
        let server = axum::serve(listener, app).with_graceful_shutdown(trigger);
        let mut serving = tokio::spawn(async move { server.await });
        let outcome = tokio::select! {
            result = &mut serving => Some(result),
            _ = signalled_rx => None,
        };
        let served = match outcome {
            Some(result) => result,
            None => {
                tracing::info!("shutting down: finishing in-flight requests");
                match tokio::time::timeout(deadline, &mut serving).await {
                    Ok(result) => result,
                    Err(_) => {
                        serving.abort();
                        let _ = self.host.stop().await;
                        return Err(ServeError::Deadline(deadline));
                    }
                }
            }
        };
        let stopped = self.host.stop().await;
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Serve(e)),
            Err(join) => {
                return Err(ServeError::Serve(std::io::Error::other(join.to_string())));
            }
        }
        stopped.map_err(ServeError::Stop)?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Binds the configured address and serves until SIGINT or SIGTERM (see
    /// [`serve`](Self::serve)). A second signal during the shutdown exits the process at
    /// once with status 130.
    pub async fn run(self) -> Result<(), ServeError> {
        let listener = self.listen().await?;
        self.serve(listener, async {
            shutdown_signal().await;
            tracing::info!("signal received; a second signal exits at once");
            tokio::spawn(async {
                shutdown_signal().await;
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            });
        })
        .await
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = futures::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
