//! auth-plugin, `type = "oauth2"`, against a real OpenID Connect provider (npm
//! `oidc-provider`, started by `bash scripts/test-servers/start-oidc.sh` on
//! 127.0.0.1:9400; it approves sign-ins without a browser, see docs/testing.md): the
//! whole authorization-code flow with PKCE, the ID token checked against the JWKS, the
//! result as a JWT or as a session, and a tampered or replayed `state` refused.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::collections::BTreeMap;

use ixp_core::axum::routing::get;
use ixp_core::{ixp_plugin, BoxError, Catalog, IxpServer, NoConfig, Plugin, PluginContext, Secret};
use ixp_plugins::auth::{Auth, AuthConfig, AuthPlugin, AuthType, AuthUser, ProviderConfig};
use serde_json::Value;

const ISSUER: &str = "http://127.0.0.1:9400";

#[ixp_plugin(name = "me-plugin", version = "1.0.0", dependencies = ["auth-plugin"])]
struct MePlugin;

impl Plugin for MePlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        ctx.http().route(
            "/me",
            get(|AuthUser(claims): AuthUser| async move { claims.sub }),
        )?;
        Ok(Self)
    }
}

fn provider(client_id: &str, secret: Option<&str>, redirect_uri: String) -> AuthConfig {
    AuthConfig {
        kind: AuthType::Oauth2,
        algorithms: vec![],
        providers: BTreeMap::from([(
            "local".to_owned(),
            ProviderConfig {
                issuer: Some(ISSUER.into()),
                client_id: client_id.into(),
                client_secret: secret.map(Secret::new),
                redirect_uri,
                ..ProviderConfig::default()
            },
        )]),
        ..AuthConfig::default()
    }
}

async fn serve_on(listener: tokio::net::TcpListener, config: AuthConfig) -> IxpServer {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<AuthPlugin>(config)
        .plugin::<MePlugin>(NoConfig {})
        .build()
        .expect("plan");
    server
        .start()
        .await
        .expect("start: discovery and JWKS of the provider");
    let router = server.router();
    tokio::spawn(async move { ixp_core::axum::serve(listener, router).await });
    server
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Plays the browser from our login route to the provider's redirect back to us;
/// returns the callback URL (not yet visited).
async fn sign_in_until_callback(client: &reqwest::Client, base: &str) -> String {
    let mut url = format!("{base}/auth/local/login");
    for _ in 0..10 {
        let response = client.get(&url).send().await.expect("hop");
        assert!(
            response.status().is_redirection(),
            "{url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a Location")
            .to_owned();
        let next = reqwest::Url::parse(&url)
            .and_then(|u| u.join(&location))
            .expect("a URL")
            .to_string();
        if next.starts_with(base) && next.contains("/callback") {
            return next;
        }
        url = next;
    }
    panic!("the flow did not come back to {base}");
}

#[tokio::test]
async fn the_code_flow_with_pkce_signs_in_and_issues_a_jwt() {
    // `ixp-web` is registered with http://127.0.0.1:9401/callback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9401")
        .await
        .expect("port 9401 (the redirect URI registered for ixp-web) must be free");
    let config = AuthConfig {
        secret: Some(Secret::new("a-shared-secret-of-32-bytes-or-more!")),
        algorithms: vec![ixp_plugins::auth::JwtAlgorithm::HS256],
        ..provider(
            "ixp-web",
            Some("ixp-web-secret"),
            "http://127.0.0.1:9401/callback".into(),
        )
    };
    let server = serve_on(listener, config).await;
    let base = "http://127.0.0.1:9401";
    let client = browser();

    // The login redirect carries PKCE S256, state and nonce.
    let first = client
        .get(format!("{base}/auth/local/login"))
        .send()
        .await
        .expect("login");
    assert_eq!(first.status(), 302);
    let location = first.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=ixp-web",
    ] {
        assert!(location.contains(part), "{location}");
    }

    let callback = sign_in_until_callback(&client, base).await;
    let response = client.get(&callback).send().await.expect("callback");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["user"]["subject"], "ixp-user");
    assert_eq!(body["user"]["email"], "ixp-user@example.test");
    let token = body["token"].as_str().expect("a JWT");
    let auth = server
        .host()
        .services()
        .get::<Auth>("auth")
        .expect("service");
    let claims = auth.verify(token).expect("our own JWT");
    assert_eq!(claims.sub, "local:ixp-user");
    let me = client
        .get(format!("{base}/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.text().await.expect("text"), "local:ixp-user");

    // The same callback again: the state was used once and is gone.
    let replay = client.get(&callback).send().await.expect("replay");
    assert_eq!(replay.status(), 401);
    let body: Value = replay.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_state", "{body}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_public_client_gets_a_session_and_a_tampered_state_is_refused() {
    // `ixp-native` is public (no secret, PKCE only) with a loopback redirect on any port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve_on(
        listener,
        provider("ixp-native", None, format!("{base}/callback")),
    )
    .await;

    // Tampered: the provider's answer with another state value.
    let client = browser();
    let callback = sign_in_until_callback(&client, &base).await;
    let mut url = reqwest::Url::parse(&callback).expect("url");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                format!("{v}x")
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let response = client.get(url.as_str()).send().await.expect("tampered");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_state", "{body}");

    // A state from another browser (this browser's cookie does not match it).
    let other = browser();
    let foreign = sign_in_until_callback(&other, &base).await;
    let response = client.get(&foreign).send().await.expect("foreign");
    assert_eq!(response.status(), 401);

    // A clean sign-in: no JWT keys, so the result is a session cookie.
    let client = browser();
    let callback = sign_in_until_callback(&client, &base).await;
    let response = client.get(&callback).send().await.expect("callback");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("token").is_none(), "{body}");
    let me = client.get(format!("{base}/me")).send().await.expect("me");
    assert_eq!(me.status(), 200);
    assert_eq!(me.text().await.expect("text"), "local:ixp-user");
    let stranger = browser()
        .get(format!("{base}/me"))
        .send()
        .await
        .expect("me");
    assert_eq!(stranger.status(), 401);

    let health = server.host().health().await.plugins["auth-plugin"].clone();
    assert_eq!(health.details["sessions"], 1, "{health:?}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unreachable_provider_fails_start_naming_it() {
    let unused = ixp_tests::free_port();
    let config = AuthConfig {
        providers: BTreeMap::from([(
            "corp".to_owned(),
            ProviderConfig {
                issuer: Some(format!("http://127.0.0.1:{unused}")),
                client_id: "x".into(),
                client_secret: Some(Secret::new("client-secret-do-not-leak")),
                redirect_uri: "http://127.0.0.1:1/cb".into(),
                ..ProviderConfig::default()
            },
        )]),
        ..provider("x", None, "http://127.0.0.1:1/cb".into())
    };
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<AuthPlugin>(config)
        .build()
        .expect("plan");
    let error = server.start().await.expect_err("nothing listens");
    let message = format!("{error} {error:?}");
    assert!(message.contains("provider `corp`"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{unused}")),
        "{message}"
    );
    assert!(!message.contains("client-secret-do-not-leak"), "{message}");
}
