//! auth-plugin, `type = "jwt"`: config checks, HS256/RS256/ES256 issue and verify, and
//! the rejection table, one test per row, through a real route guarded by the
//! `AuthUser` extractor (401 + JSON error) and through `protectedPaths`.
//! RSA and EC keys are made for the test with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ixp_core::axum::routing::get;
use ixp_core::{ixp_plugin, BoxError, Catalog, IxpServer, NoConfig, Plugin, PluginContext, Secret};
use ixp_plugins::auth::{Auth, AuthConfig, AuthError, AuthPlugin, AuthUser, JwtAlgorithm};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<AuthPlugin>(toml)
}

#[test]
fn the_guide_config_parses_and_each_bad_field_is_reported() {
    assert_eq!(
        problems(&format!(
            "[plugins.auth-plugin]\ntype = \"jwt\"\nsecret = \"{SECRET}\"\nalgorithms = [\"HS256\"]\nissuer = \"ixp-server\"\naudience = \"ixp-client\"\nexpiresIn = \"24h\"\n"
        )),
        ""
    );
    let report = problems(
        r#"[plugins.auth-plugin]
type = "jwt"
secret = "short"
algorithms = ["HS256", "RS256", "ES256"]
expiresIn = "a day"
protectedPaths = ["api/"]
publicKeyFile = "/definitely/not/here.pem"
"#,
    );
    for expected in [
        "plugins.auth-plugin.secret: must be at least 32 bytes for HS256",
        "plugins.auth-plugin.algorithms: RS256 and ES256 need different key files; list one of them",
        "plugins.auth-plugin.expiresIn: `a day` is not a duration",
        "plugins.auth-plugin.protectedPaths[0]: `api/` must start with `/`",
        "plugins.auth-plugin.publicKeyFile: `/definitely/not/here.pem` is not a readable file",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }
    assert!(!report.contains("short"), "the secret is echoed:\n{report}");
    let report = problems("[plugins.auth-plugin]\nalgorithms = [\"HS999\"]\n");
    assert!(
        report.contains("plugins.auth-plugin.algorithms"),
        "{report}"
    );
    let report = problems("[plugins.auth-plugin]\nalgorithms = [\"RS256\"]\n");
    assert!(
        report.contains("plugins.auth-plugin.publicKeyFile: is required when RS256 or ES256"),
        "{report}"
    );
    let report = problems("[plugins.auth-plugin]\n");
    assert!(
        report.contains("plugins.auth-plugin.secret: is required when HS256 is in `algorithms`"),
        "{report}"
    );
}

#[cfg(not(feature = "services"))]
#[test]
fn oauth2_without_its_feature_names_the_feature() {
    let report = problems(
        "[plugins.auth-plugin]\ntype = \"oauth2\"\n[plugins.auth-plugin.providers.corp]\nclientId = \"x\"\nredirectUri = \"http://127.0.0.1:1/cb\"\nissuer = \"http://127.0.0.1:9400\"\n",
    );
    assert!(
        report.contains("plugins.auth-plugin.type: the `oauth2` backend is not compiled in; enable the Cargo feature `auth-oauth2`"),
        "{report}"
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hs_config() -> AuthConfig {
    AuthConfig {
        secret: Some(Secret::new(SECRET)),
        issuer: Some("ixp-server".into()),
        audience: Some("ixp-client".into()),
        leeway: "0s".into(),
        protected_paths: vec!["/api/".into()],
        ..AuthConfig::default()
    }
}

fn claims(overrides: Value) -> Value {
    let mut claims = json!({
        "sub": "user-1",
        "iss": "ixp-server",
        "aud": "ixp-client",
        "exp": now() + 600,
        "nbf": now() - 10,
        "iat": now() - 10,
    });
    if let (Some(base), Some(extra)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

#[ixp_plugin(name = "profile-plugin", version = "1.0.0", dependencies = ["auth-plugin"])]
struct ProfilePlugin;

impl Plugin for ProfilePlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.http().route(
            "/me",
            get(|AuthUser(claims): AuthUser| async move { format!("hello {}", claims.sub) }),
        )?;
        ctx.http()
            .route("/api/data", get(|| async { "protected data" }))?;
        ctx.http().route("/open", get(|| async { "open" }))?;
        Ok(())
    }
}

struct Running {
    server: IxpServer,
    base: String,
    client: reqwest::Client,
}

async fn serve(config: AuthConfig) -> Running {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<AuthPlugin>(config)
        .plugin::<ProfilePlugin>(NoConfig {})
        .build()
        .expect("plan");
    server.start().await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = server.router();
    tokio::spawn(async move { ixp_core::axum::serve(listener, router).await });
    Running {
        server,
        base,
        client: reqwest::Client::new(),
    }
}

impl Running {
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, challenge)
    }

    /// Asserts `token` is refused at `/me` with 401 and `code`, and at `/api/data` too.
    async fn refused(&self, token: Option<&str>, code: &str) {
        for path in ["/me", "/api/data"] {
            let (status, body, challenge) = self.get(path, token).await;
            assert_eq!(status, 401, "{path}: {body}");
            assert_eq!(body["error"], code, "{path}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        assert_eq!(
            self.get("/open", token).await.0,
            200,
            "unprotected paths stay open"
        );
    }
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_its_claims_reach_the_handler() {
    let running = serve(hs_config()).await;
    let auth = running
        .server
        .host()
        .services()
        .get::<Auth>("auth")
        .expect("service");
    let mut extra = serde_json::Map::new();
    extra.insert("role".into(), "admin".into());
    let token = auth.issue("user-7", extra).expect("issue");
    let claims = auth.verify(&token).expect("verify");
    assert_eq!(claims.sub, "user-7");
    assert_eq!(claims.extra["role"], "admin");
    assert!(claims.exp >= now() + 24 * 3600 - 5, "expiresIn = 24h");
    assert_eq!(
        running.get("/me", Some(&token)).await.1,
        Value::String("hello user-7".into())
    );
    assert_eq!(
        running.get("/api/data", Some(&token)).await.1,
        Value::String("protected data".into())
    );
    running.server.stop().await.expect("stop");
}

#[tokio::test]
async fn rejects_a_missing_token() {
    serve(hs_config())
        .await
        .refused(None, "missing_token")
        .await;
}

#[tokio::test]
async fn rejects_an_expired_token() {
    let token = hs256(&claims(json!({ "exp": now() - 60 })), SECRET.as_bytes());
    serve(hs_config())
        .await
        .refused(Some(&token), "token_expired")
        .await;
}

#[tokio::test]
async fn rejects_a_token_not_yet_valid() {
    let token = hs256(&claims(json!({ "nbf": now() + 600 })), SECRET.as_bytes());
    serve(hs_config())
        .await
        .refused(Some(&token), "token_not_yet_valid")
        .await;
}

#[tokio::test]
async fn rejects_a_wrong_issuer() {
    let token = hs256(&claims(json!({ "iss": "someone-else" })), SECRET.as_bytes());
    serve(hs_config())
        .await
        .refused(Some(&token), "wrong_issuer")
        .await;
}

#[tokio::test]
async fn rejects_a_wrong_audience() {
    let token = hs256(
        &claims(json!({ "aud": "another-client" })),
        SECRET.as_bytes(),
    );
    serve(hs_config())
        .await
        .refused(Some(&token), "wrong_audience")
        .await;
}

#[tokio::test]
async fn rejects_a_bad_signature() {
    let token = hs256(
        &claims(json!({})),
        b"another-secret-that-is-also-32-bytes-long!",
    );
    serve(hs_config())
        .await
        .refused(Some(&token), "bad_signature")
        .await;
    // A payload changed after signing.
    let good = hs256(&claims(json!({})), SECRET.as_bytes());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims(json!({ "sub": "admin" })).to_string());
    serve(hs_config())
        .await
        .refused(Some(&parts.join(".")), "bad_signature")
        .await;
}

#[tokio::test]
async fn rejects_alg_none() {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT" })),
        b64(claims(json!({})))
    );
    serve(hs_config())
        .await
        .refused(Some(&token), "unsupported_algorithm")
        .await;
}

#[tokio::test]
async fn rejects_an_algorithm_outside_the_allow_list() {
    let token = encode(
        &Header::new(Algorithm::HS512),
        &claims(json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    serve(hs_config())
        .await
        .refused(Some(&token), "algorithm_not_allowed")
        .await;
}

#[tokio::test]
async fn rejects_garbage() {
    let running = serve(hs_config()).await;
    for garbage in ["garbage", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        running.refused(Some(garbage), "malformed_token").await;
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the `openssl` command makes the test keys");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private and public PEM key pair: `rsa` or `ec` (P-256).
fn key_pair(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{kind}-private.pem"));
    let public = dir.join(format!("{kind}-public.pem"));
    let private_s = private.to_str().expect("utf8");
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private_s,
        ]),
        _ => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            private_s,
        ]),
    }
    openssl(&[
        "pkey",
        "-in",
        private_s,
        "-pubout",
        "-out",
        public.to_str().expect("utf8"),
    ]);
    (private, public)
}

fn keyed_config(algorithm: JwtAlgorithm, private: PathBuf, public: PathBuf) -> AuthConfig {
    AuthConfig {
        secret: None,
        algorithms: vec![algorithm],
        private_key_file: Some(private),
        public_key_file: Some(public),
        ..hs_config()
    }
}

#[tokio::test]
async fn rs256_and_es256_issue_and_verify_with_key_files() {
    let dir = ixp_tests::temp_dir("jwt-keys");
    for (kind, algorithm) in [("rsa", JwtAlgorithm::RS256), ("ec", JwtAlgorithm::ES256)] {
        let (private, public) = key_pair(&dir, kind);
        let running = serve(keyed_config(algorithm, private, public)).await;
        let auth = running
            .server
            .host()
            .services()
            .get::<Auth>("auth")
            .expect("service");
        let token = auth.issue("user-9", Default::default()).expect("issue");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(format!("{:?}", header.alg), format!("{algorithm:?}"));
        assert_eq!(
            running.get("/me", Some(&token)).await.1,
            Value::String("hello user-9".into())
        );
        // An HS256 token is refused: HS256 is not on this allow-list.
        let hs = hs256(&claims(json!({})), SECRET.as_bytes());
        running.refused(Some(&hs), "algorithm_not_allowed").await;
        running.server.stop().await.expect("stop");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn rejects_an_hs256_token_signed_with_the_rs256_public_key() {
    let dir = ixp_tests::temp_dir("jwt-confusion");
    let (private, public) = key_pair(&dir, "rsa");
    let public_pem = std::fs::read(&public).expect("public key");
    // The classic key-confusion attack: the public key used as an HMAC secret.
    let forged = hs256(&claims(json!({ "sub": "admin" })), &public_pem);
    let running = serve(keyed_config(
        JwtAlgorithm::RS256,
        private.clone(),
        public.clone(),
    ))
    .await;
    running
        .refused(Some(&forged), "algorithm_not_allowed")
        .await;
    running.server.stop().await.expect("stop");
    // Even with HS256 also allowed (and a secret of its own), the forged token fails.
    let both = AuthConfig {
        algorithms: vec![JwtAlgorithm::RS256, JwtAlgorithm::HS256],
        secret: Some(Secret::new(SECRET)),
        ..keyed_config(JwtAlgorithm::RS256, private, public)
    };
    let running = serve(both).await;
    running.refused(Some(&forged), "bad_signature").await;
    running.server.stop().await.expect("stop");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn errors_never_carry_the_token() {
    let error = AuthError::Malformed;
    assert_eq!(error.to_string(), "the token is not a well-formed JWT");
    let debug = format!(
        "{:?}",
        AuthConfig {
            secret: Some(Secret::new(SECRET)),
            ..AuthConfig::default()
        }
    );
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_present() {
    let running = serve(hs_config()).await;
    let mut no_iss = claims(json!({}));
    no_iss.as_object_mut().expect("object").remove("iss");
    running
        .refused(Some(&hs256(&no_iss, SECRET.as_bytes())), "invalid_token")
        .await;
    let mut no_aud = claims(json!({}));
    no_aud.as_object_mut().expect("object").remove("aud");
    running
        .refused(Some(&hs256(&no_aud, SECRET.as_bytes())), "invalid_token")
        .await;
    running.server.stop().await.expect("stop");
}

#[tokio::test]
async fn protection_survives_a_restart_and_matches_whole_segments() {
    let running = serve(hs_config()).await;
    running
        .server
        .host()
        .restart("auth-plugin")
        .await
        .expect("restart");
    running.refused(None, "missing_token").await;
    let auth = running
        .server
        .host()
        .services()
        .get::<Auth>("auth")
        .expect("the service is back after the restart");
    let token = auth.issue("user-3", Default::default()).expect("issue");
    assert_eq!(
        running.get("/api/data", Some(&token)).await.1,
        Value::String("protected data".into())
    );
    running.server.stop().await.expect("stop");

    use ixp_plugins::auth::is_protected;
    for (prefix, path, expected) in [
        ("/api/", "/api", true),
        ("/api/", "/api/data", true),
        ("/api", "/api/data", true),
        ("/api", "/apix", false),
        ("/api/", "/api-docs", false),
        ("/", "/anything", true),
    ] {
        assert_eq!(is_protected(prefix, path), expected, "{prefix} {path}");
    }
}

#[test]
fn durations_past_what_the_clocks_can_add_are_problems() {
    let report = problems(&format!(
        "[plugins.auth-plugin]\ntype = \"jwt\"\nsecret = \"{SECRET}\"\nleeway = \"2h\"\nexpiresIn = \"100years\"\n"
    ));
    for expected in [
        "plugins.auth-plugin.leeway: must be at most 1h",
        "plugins.auth-plugin.expiresIn: must be at most 3650 days",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert_eq!(
        problems(&format!(
            "[plugins.auth-plugin]\ntype = \"jwt\"\nsecret = \"{SECRET}\"\nleeway = \"1h\"\nexpiresIn = \"3650days\"\n"
        )),
        ""
    );
}
