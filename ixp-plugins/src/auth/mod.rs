//! `auth-plugin`: the guide's AuthPlugin, chosen by `type`:
//!
//! * `jwt` (feature `auth-jwt`): issue and verify JSON Web Tokens (`jsonwebtoken`)
//!   with an allow-list of algorithms (HS256 with a shared `secret`, RS256 or ES256
//!   with PEM key files), `issuer`, `audience`, `expiresIn`;
//! * `oauth2` (feature `auth-oauth2`): sign users in with `google`, `github` or any
//!   OpenID Connect issuer, by the authorization-code flow with PKCE; the ID token is
//!   verified against the provider's JWKS. The result is a JWT (when JWT keys are set)
//!   or a server-side session cookie.
//!
//! The `auth` service ([`Auth`]) issues and verifies; the [`AuthUser`] extractor
//! guards a route (401 with a JSON error otherwise), and `protectedPaths` guards whole
//! path prefixes.
//!
//! ```toml
//! [plugins.auth-plugin]
//! type = "jwt"
//! secret = "${JWT_SECRET}"          # at least 32 bytes
//! algorithms = ["HS256"]            # or ["RS256"] with publicKeyFile/privateKeyFile
//! issuer = "ixp-server"
//! audience = "ixp-client"
//! expiresIn = "24h"
//! protectedPaths = ["/api/"]
//!
//! # type = "oauth2"
//! # [plugins.auth-plugin.providers.google]
//! # clientId = "${GOOGLE_CLIENT_ID}"
//! # clientSecret = "${GOOGLE_CLIENT_SECRET}"
//! # redirectUri = "https://app.example/auth/google/callback"
//! ```
//!
//! With `oauth2`, each provider gets `GET /auth/<provider>/login` (redirects to the
//! provider) and its callback at the path of its `redirectUri`.
//!
//! ```
//! # #[cfg(feature = "auth-jwt")]
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ixp_core::{Host, Secret};
//! use ixp_plugins::auth::{Auth, AuthConfig, AuthError, AuthPlugin};
//!
//! let config = AuthConfig {
//!     secret: Some(Secret::new("a-shared-secret-of-32-bytes-or-more!")),
//!     issuer: Some("ixp-server".into()),
//!     ..AuthConfig::default()
//! };
//! let host = Host::builder().plugin::<AuthPlugin>(config).build()?;
//! host.launch().await?;
//! let auth = host.services().get::<Auth>("auth")?;
//! let token = auth.issue("user-1", Default::default())?;
//! assert_eq!(auth.verify(&token)?.sub, "user-1");
//! assert_eq!(auth.verify("garbage"), Err(AuthError::Malformed));
//! host.stop().await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "auth-jwt"))] fn main() {}
//! ```

mod config;
mod extract;
mod jwt;
#[cfg(feature = "auth-oauth2")]
mod oauth2;

pub use config::{AuthConfig, AuthType, JwtAlgorithm, ProviderConfig};
pub use extract::{AuthRejection, AuthUser};
pub use jwt::{Audience, AuthError, Claims, Jwt};
#[cfg(feature = "auth-oauth2")]
pub use oauth2::{OAuthError, User, SESSION_COOKIE, STATE_COOKIE};

use std::sync::Arc;

use ixp_core::axum::extract::Request;
use ixp_core::axum::middleware::Next;
use ixp_core::{
    ixp_plugin, BoxError, ConfigViolation, HealthStatus, Plugin, PluginContext, PluginHealth,
};
use serde_json::{Map, Value};

/// The `auth` service: issues and verifies tokens, and (oauth2) knows the sessions.
#[derive(Debug)]
pub struct Auth {
    jwt: Option<Jwt>,
    #[cfg(feature = "auth-oauth2")]
    oauth: Option<oauth2::OAuth>,
}

impl Auth {
    /// Issues a token for `subject` with `extra` claims.
    pub fn issue(&self, subject: &str, extra: Map<String, Value>) -> Result<String, AuthError> {
        match &self.jwt {
            Some(jwt) => jwt.issue(subject, extra),
            None => Err(AuthError::CannotIssue("no JWT keys are configured".into())),
        }
    }

    /// Verifies a token (see [`Jwt::verify`]).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match &self.jwt {
            Some(jwt) => jwt.verify(token),
            None => Err(AuthError::Invalid("no JWT keys are configured".into())),
        }
    }

    /// The claims of a live oauth2 session (`sub` = `<provider>:<subject>`).
    #[cfg(feature = "auth-oauth2")]
    pub fn session(&self, id: &str) -> Option<Claims> {
        let (user, expires) = self.oauth.as_ref()?.session(id)?;
        Some(session_claims(&user, expires))
    }
}

#[cfg(feature = "auth-oauth2")]
fn session_claims(user: &User, expires: std::time::Instant) -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut extra = Map::new();
    extra.insert("provider".into(), user.provider.clone().into());
    if let Some(email) = &user.email {
        extra.insert("email".into(), email.clone().into());
    }
    if let Some(name) = &user.name {
        extra.insert("name".into(), name.clone().into());
    }
    Claims {
        sub: format!("{}:{}", user.provider, user.subject),
        iss: None,
        aud: None,
        exp: now
            + expires
                .saturating_duration_since(std::time::Instant::now())
                .as_secs(),
        nbf: None,
        iat: None,
        extra,
    }
}

/// The guide's AuthPlugin: registers the `auth` service ([`Auth`]), puts it in every
/// request's extensions (for [`AuthUser`]), guards `protectedPaths`, and mounts the
/// oauth2 routes.
#[ixp_plugin(
    name = "auth-plugin",
    version = "0.1.0",
    description = "Authentication: JWT issue/verify and OAuth2/OpenID Connect sign-in",
    provides = ["auth"],
    optional_dependencies = ["logging-plugin"],
    feature = "auth-jwt, auth-oauth2",
    enabled_by_default = false,
)]
pub struct AuthPlugin {
    auth: Arc<Auth>,
    protected: Arc<[String]>,
    mounted: bool,
}

/// Whether `path` is under the protected `prefix`, segment-wise: `/api` and `/api/`
/// both cover `/api` and `/api/x`, not `/apix`.
pub fn is_protected(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Registers the `auth` service, the middleware that puts it in requests and guards
/// `protectedPaths`, and the oauth2 routes.
fn mount(ctx: &PluginContext, auth: &Arc<Auth>, protected: &Arc<[String]>) -> Result<(), BoxError> {
    ctx.services().register_arc("auth", auth.clone())?;
    let protected = protected.clone();
    let for_requests = auth.clone();
    ctx.http()
        .middleware(move |mut request: Request, next: Next| {
            let auth = for_requests.clone();
            let protected = protected.clone();
            async move {
                request.extensions_mut().insert(auth.clone());
                let path = request.uri().path();
                if protected.iter().any(|prefix| is_protected(prefix, path)) {
                    match extract::authenticate(&auth, request.headers()) {
                        Ok(claims) => {
                            request.extensions_mut().insert(AuthUser(claims));
                        }
                        Err(error) => {
                            return ixp_core::axum::response::IntoResponse::into_response(
                                AuthRejection(error),
                            )
                        }
                    }
                }
                next.run(request).await
            }
        });
    #[cfg(feature = "auth-oauth2")]
    if auth.oauth.is_some() {
        extract::mount_oauth_routes(ctx, auth)?;
    }
    Ok(())
}

impl Plugin for AuthPlugin {
    type Config = AuthConfig;

    fn validate_config(config: &AuthConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: AuthConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let jwt = if config.kind == AuthType::Jwt || config.has_jwt_keys() {
            Some(Jwt::from_config(&config)?)
        } else {
            None
        };
        #[cfg(feature = "auth-oauth2")]
        let oauth = if config.kind == AuthType::Oauth2 {
            Some(oauth2::OAuth::connect(&config).await?)
        } else {
            None
        };
        #[cfg(not(feature = "auth-oauth2"))]
        if config.kind == AuthType::Oauth2 {
            return Err(
                "the `oauth2` backend is not compiled in; enable the Cargo feature `auth-oauth2`"
                    .into(),
            );
        }
        let auth = Arc::new(Auth {
            jwt,
            #[cfg(feature = "auth-oauth2")]
            oauth,
        });
        let protected: Arc<[String]> = config.protected_paths.clone().into();
        mount(ctx, &auth, &protected)?;
        ctx.logger().info(format_args!(
            "{} ready",
            match config.kind {
                AuthType::Jwt => "jwt",
                AuthType::Oauth2 => "oauth2",
            }
        ));
        Ok(Self {
            auth,
            protected,
            mounted: true,
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        // After a restart the host has removed what the plugin registered: put it back.
        if !self.mounted {
            mount(ctx, &self.auth, &self.protected)?;
            self.mounted = true;
        }
        Ok(())
    }

    async fn stop(&mut self, _ctx: &PluginContext) -> Result<(), BoxError> {
        // The host removes the service, middleware and routes after this returns.
        self.mounted = false;
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        let mut health = PluginHealth::healthy();
        if let Some(jwt) = &self.auth.jwt {
            health = health.with_detail("jwt", format!("{jwt:?}"));
        }
        #[cfg(feature = "auth-oauth2")]
        if let Some(oauth) = &self.auth.oauth {
            let (pending, sessions) = oauth.counts();
            health = health
                .with_detail("pendingSignIns", pending)
                .with_detail("sessions", sessions);
            if let Err(e) = oauth.probe().await {
                health = health
                    .with_status(HealthStatus::Unhealthy)
                    .with_message(e.to_string());
            }
        }
        let _ = HealthStatus::Healthy;
        health
    }
}
