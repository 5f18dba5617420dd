//! The typed configuration of `auth-plugin`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ixp_core::{ConfigViolation, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// Which backend (the guide's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// Issue and verify JSON Web Tokens (feature `auth-jwt`).
    Jwt,
    /// Sign users in with OAuth2 / OpenID Connect providers (feature `auth-oauth2`); the
    /// result is a JWT when JWT keys are configured, a server-side session otherwise.
    Oauth2,
}

/// A signing algorithm of the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and the shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and the key files.
    RS256,
    /// ECDSA P-256 with SHA-256 and the key files.
    ES256,
}

impl JwtAlgorithm {
    /// Whether the algorithm uses the shared secret (else the key files).
    pub fn is_hmac(self) -> bool {
        self == JwtAlgorithm::HS256
    }
}

/// One OAuth2 / OpenID Connect provider.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderConfig {
    /// The OpenID Connect issuer, e.g. `https://accounts.google.com`; its
    /// `/.well-known/openid-configuration` is read at start. Preset for `google`.
    pub issuer: Option<String>,
    /// The discovery document's URL, when it is not under the issuer.
    pub discovery_url: Option<String>,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret (none for a public client, which then relies on PKCE alone).
    pub client_secret: Option<Secret>,
    /// Where the provider sends the browser back; its path is the callback route this
    /// plugin mounts.
    pub redirect_uri: String,
    /// Scopes asked for (`openid` is always asked for OpenID Connect providers).
    pub scopes: Vec<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            discovery_url: None,
            client_id: String::new(),
            client_secret: None,
            redirect_uri: String::new(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
        }
    }
}

/// Configuration of `auth-plugin` (keys in camelCase, as in the guide).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    /// `jwt` or `oauth2`.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// jwt: the shared secret of HS256 (at least 32 bytes).
    pub secret: Option<Secret>,
    /// jwt: PEM private key for RS256 / ES256 (needed to issue tokens).
    pub private_key_file: Option<PathBuf>,
    /// jwt: PEM public key for RS256 / ES256 (needed to verify tokens).
    pub public_key_file: Option<PathBuf>,
    /// jwt: the algorithms accepted; tokens signed otherwise (or with `none`) are
    /// rejected. The first one signs the tokens this plugin issues.
    pub algorithms: Vec<JwtAlgorithm>,
    /// jwt: `iss` of issued tokens, required in verified ones.
    pub issuer: Option<String>,
    /// jwt: `aud` of issued tokens, required in verified ones.
    pub audience: Option<String>,
    /// jwt: lifetime of issued tokens, e.g. `"24h"`, `"15m"`.
    pub expires_in: String,
    /// jwt: clock skew tolerated on `exp` / `nbf`, e.g. `"30s"`.
    pub leeway: String,
    /// Path prefixes every request to which needs a valid token (or session), e.g.
    /// `["/api/"]`; others may use the [`AuthUser`](super::AuthUser) extractor.
    pub protected_paths: Vec<String>,
    /// oauth2: providers by name (`google`, `github`, or any OpenID Connect issuer).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// oauth2: how long a sign-in may take between login and callback, e.g. `"10m"`.
    pub login_timeout: String,
    /// oauth2: lifetime of a server-side session (when no JWT keys are configured).
    pub session_ttl: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            kind: AuthType::Jwt,
            secret: None,
            private_key_file: None,
            public_key_file: None,
            algorithms: vec![JwtAlgorithm::HS256],
            issuer: None,
            audience: None,
            expires_in: "24h".into(),
            leeway: "30s".into(),
            protected_paths: Vec::new(),
            providers: BTreeMap::new(),
            login_timeout: "10m".into(),
            session_ttl: "24h".into(),
        }
    }
}

/// The longest `leeway`: clock skew allowed between servers, not a second lifetime.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);
/// The longest `expiresIn`, `loginTimeout` and `sessionTtl`: far past any real use, far
/// from the overflow of the clocks they are added to.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Parses a `"24h"` style duration.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"24h\" or \"15m\": {e}"))
}

impl AuthConfig {
    /// Whether JWT keys are configured (so oauth2 sign-ins result in a JWT).
    pub fn has_jwt_keys(&self) -> bool {
        self.secret.is_some() || self.private_key_file.is_some() || self.public_key_file.is_some()
    }

    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        let feature = match self.kind {
            AuthType::Jwt => ("jwt", "auth-jwt", cfg!(feature = "auth-jwt")),
            AuthType::Oauth2 => ("oauth2", "auth-oauth2", cfg!(feature = "auth-oauth2")),
        };
        if !feature.2 {
            found.push(ConfigViolation::new(
                "type",
                format!(
                    "the `{}` backend is not compiled in; enable the Cargo feature `{}`",
                    feature.0, feature.1
                ),
            ));
        }
        for (field, text) in [
            ("expiresIn", &self.expires_in),
            ("leeway", &self.leeway),
            ("loginTimeout", &self.login_timeout),
            ("sessionTtl", &self.session_ttl),
        ] {
            let (most, most_text) = if field == "leeway" {
                (MAX_LEEWAY, "1h")
            } else {
                (MAX_DURATION, "3650 days")
            };
            match duration(text) {
                Ok(d) if d.is_zero() && field != "leeway" => {
                    found.push(ConfigViolation::new(field, "must be longer than 0"))
                }
                Ok(d) if d > most => found.push(ConfigViolation::new(
                    field,
                    format!("must be at most {most_text}"),
                )),
                Ok(_) => {}
                Err(message) => found.push(ConfigViolation::new(field, message)),
            }
        }
        for (i, prefix) in self.protected_paths.iter().enumerate() {
            if !prefix.starts_with('/') {
                found.push(ConfigViolation::new(
                    format!("protectedPaths[{i}]"),
                    format!("`{prefix}` must start with `/`"),
                ));
            }
        }
        if self.kind == AuthType::Jwt || self.has_jwt_keys() {
            self.jwt_violations(&mut found);
        }
        if self.kind == AuthType::Oauth2 {
            self.oauth2_violations(&mut found);
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }

    fn jwt_violations(&self, found: &mut Vec<ConfigViolation>) {
        if self.algorithms.is_empty() {
            found.push(ConfigViolation::new(
                "algorithms",
                "must list at least one algorithm",
            ));
        }
        let wants_hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let wants_keys = self.algorithms.iter().any(|a| !a.is_hmac());
        let rsa = self.algorithms.contains(&JwtAlgorithm::RS256);
        let ec = self.algorithms.contains(&JwtAlgorithm::ES256);
        match &self.secret {
            Some(secret) if wants_hmac && secret.expose().len() < 32 => found.push(
                ConfigViolation::new("secret", "must be at least 32 bytes for HS256"),
            ),
            None if wants_hmac => found.push(ConfigViolation::new(
                "secret",
                "is required when HS256 is in `algorithms`",
            )),
            Some(_) if !wants_hmac => found.push(ConfigViolation::new(
                "secret",
                "is set but HS256 is not in `algorithms`",
            )),
            _ => {}
        }
        if rsa && ec {
            found.push(ConfigViolation::new(
                "algorithms",
                "RS256 and ES256 need different key files; list one of them",
            ));
        }
        if wants_keys && self.public_key_file.is_none() {
            found.push(ConfigViolation::new(
                "publicKeyFile",
                "is required when RS256 or ES256 is in `algorithms` (privateKeyFile too, to issue tokens)",
            ));
        }
        for (field, path) in [
            ("privateKeyFile", &self.private_key_file),
            ("publicKeyFile", &self.public_key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    found.push(ConfigViolation::new(
                        field,
                        format!("`{}` is not a readable file", path.display()),
                    ));
                }
            }
        }
    }

    fn oauth2_violations(&self, found: &mut Vec<ConfigViolation>) {
        if self.providers.is_empty() {
            found.push(ConfigViolation::new(
                "providers",
                "must name at least one provider",
            ));
        }
        let mut callbacks: BTreeMap<String, &str> = BTreeMap::new();
        for (name, provider) in &self.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                found.push(ConfigViolation::new(
                    format!("providers.{name}"),
                    "provider names may hold letters, digits, `-` and `_` only",
                ));
            }
            if provider.client_id.trim().is_empty() {
                found.push(ConfigViolation::new(at("clientId"), "must not be empty"));
            }
            let preset = matches!(name.as_str(), "google" | "github");
            if provider.issuer.is_none() && provider.discovery_url.is_none() && !preset {
                found.push(ConfigViolation::new(
                    at("issuer"),
                    format!("is required for `{name}` (only google and github are preset)"),
                ));
            }
            for (field, url) in [
                ("issuer", &provider.issuer),
                ("discoveryUrl", &provider.discovery_url),
            ] {
                if let Some(url) = url {
                    if !is_http_url(url) {
                        found.push(ConfigViolation::new(
                            at(field),
                            format!("`{url}` must be an http:// or https:// URL"),
                        ));
                    }
                }
            }
            match callback_path(&provider.redirect_uri) {
                Some(path) => {
                    if let Some(other) = callbacks.insert(path.clone(), name) {
                        found.push(ConfigViolation::new(
                            at("redirectUri"),
                            format!("its path `{path}` is already the callback of `{other}`"),
                        ));
                    }
                }
                None => found.push(ConfigViolation::new(
                    at("redirectUri"),
                    format!(
                        "`{}` must be an http:// or https:// URL with a path",
                        provider.redirect_uri
                    ),
                )),
            }
        }
    }
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len()
}

/// The path of a redirect URI (`http://host:port/callback` -> `/callback`).
pub(crate) fn callback_path(redirect_uri: &str) -> Option<String> {
    if !is_http_url(redirect_uri) {
        return None;
    }
    let rest = redirect_uri.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next()?;
    (path.len() > 1).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_paths() {
        assert_eq!(
            callback_path("http://127.0.0.1:9401/callback").as_deref(),
            Some("/callback")
        );
        assert_eq!(
            callback_path("https://app.example/auth/google/callback?x=1").as_deref(),
            Some("/auth/google/callback")
        );
        assert_eq!(callback_path("https://app.example"), None);
        assert_eq!(callback_path("https://app.example/"), None);
        assert_eq!(callback_path("ftp://x/cb"), None);
    }
}
