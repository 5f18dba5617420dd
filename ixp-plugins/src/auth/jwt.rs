//! Issuing and verifying JSON Web Tokens (`jsonwebtoken`, pure-Rust crypto).

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{duration, AuthConfig, JwtAlgorithm};

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The claims of a token: the registered ones, and the rest in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject (user id).
    pub sub: String,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Every other claim (roles, email, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a token was refused (or could not be made). The message says what, never the
/// token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    /// Not three base64url parts with a JSON header and payload.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `alg: none`, or an algorithm this server does not know.
    #[error("the token's algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(String),
    /// A known algorithm outside the configured allow-list.
    #[error("the token's algorithm `{0}` is not allowed (allowed: {1})")]
    AlgorithmNotAllowed(String, String),
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not hold the configured audience.
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// Another problem with the token (a missing claim, ...).
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// The plugin cannot issue tokens (no private key, or not a JWT backend).
    #[error("cannot issue tokens: {0}")]
    CannotIssue(String),
}

impl AuthError {
    /// A short machine-readable code, used as `error` in 401 responses.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            AuthError::AlgorithmNotAllowed(..) => "algorithm_not_allowed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::CannotIssue(_) => "cannot_issue",
        }
    }
}

/// Why the JWT keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct KeyError {
    field: &'static str,
    message: String,
}

/// Issues and verifies tokens with the configured algorithms and keys.
pub struct Jwt {
    algorithms: Vec<JwtAlgorithm>,
    signing: Option<(JwtAlgorithm, EncodingKey)>,
    hmac: Option<DecodingKey>,
    public: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    expires_in: Duration,
    leeway: Duration,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

fn to_algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    /// Loads the keys the config names.
    pub fn from_config(config: &AuthConfig) -> Result<Self, KeyError> {
        let read = |field: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| KeyError {
                field,
                message: format!("cannot read `{}`: {e}", path.display()),
            })
        };
        let asymmetric = config.algorithms.iter().copied().find(|a| !a.is_hmac());
        let hmac = config
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let public = match (&config.public_key_file, asymmetric) {
            (Some(path), Some(algorithm)) => {
                let pem = read("publicKeyFile", path)?;
                let key = match algorithm {
                    JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                Some(key.map_err(|e| KeyError {
                    field: "publicKeyFile",
                    message: format!(
                        "`{}` is not a {algorithm:?} public key: {e}",
                        path.display()
                    ),
                })?)
            }
            _ => None,
        };
        let signing = match config.algorithms.first().copied() {
            Some(JwtAlgorithm::HS256) => config.secret.as_ref().map(|s| {
                (
                    JwtAlgorithm::HS256,
                    EncodingKey::from_secret(s.expose().as_bytes()),
                )
            }),
            Some(algorithm) => match &config.private_key_file {
                Some(path) => {
                    let pem = read("privateKeyFile", path)?;
                    let key = match algorithm {
                        JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                        _ => EncodingKey::from_rsa_pem(&pem),
                    };
                    Some((
                        algorithm,
                        key.map_err(|e| KeyError {
                            field: "privateKeyFile",
                            message: format!(
                                "`{}` is not a {algorithm:?} private key: {e}",
                                path.display()
                            ),
                        })?,
                    ))
                }
                None => None,
            },
            None => None,
        };
        let parse = |field: &'static str, text: &str| {
            duration(text).map_err(|message| KeyError { field, message })
        };
        Ok(Self {
            algorithms: config.algorithms.clone(),
            signing,
            hmac,
            public,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            expires_in: parse("expiresIn", &config.expires_in)?,
            leeway: parse("leeway", &config.leeway)?,
        })
    }

    /// Issues a token for `subject` with `extra` claims, valid for `expiresIn`, with the
    /// configured issuer and audience.
    pub fn issue(&self, subject: &str, extra: Map<String, Value>) -> Result<String, AuthError> {
        let Some((algorithm, key)) = &self.signing else {
            return Err(AuthError::CannotIssue(
                "no signing key (set `secret` for HS256, `privateKeyFile` for RS256/ES256)".into(),
            ));
        };
        let issued = now();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            exp: issued + self.expires_in.as_secs(),
            nbf: Some(issued),
            iat: Some(issued),
            extra,
        };
        jsonwebtoken::encode(&Header::new(to_algorithm(*algorithm)), &claims, key)
            .map_err(|e| AuthError::CannotIssue(e.to_string()))
    }

    /// Verifies a token: its algorithm is on the allow-list, the signature matches the
    /// key of that algorithm, `exp`/`nbf` hold (with `leeway`), and issuer and audience
    /// are the configured ones.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let algorithm = self.header_algorithm(token)?;
        let key = if algorithm.is_hmac() {
            self.hmac.as_ref()
        } else {
            self.public.as_ref()
        };
        let Some(key) = key else {
            return Err(AuthError::AlgorithmNotAllowed(
                format!("{algorithm:?}"),
                self.allowed(),
            ));
        };
        let mut validation = Validation::new(to_algorithm(algorithm));
        validation.algorithms = vec![to_algorithm(algorithm)];
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not only match when present.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidAlgorithm => {
                    AuthError::AlgorithmNotAllowed(format!("{algorithm:?}"), self.allowed())
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("the `{claim}` claim is missing"))
                }
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => AuthError::Malformed,
                other => AuthError::Invalid(format!("{other:?}")),
            })
    }

    fn allowed(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads `alg` from the token's header, before anything else is trusted.
    fn header_algorithm(&self, token: &str) -> Result<JwtAlgorithm, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed)?;
        let header: Value = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        let Some(name) = header.get("alg").and_then(Value::as_str) else {
            return Err(AuthError::Malformed);
        };
        let algorithm = match name {
            "HS256" => JwtAlgorithm::HS256,
            "RS256" => JwtAlgorithm::RS256,
            "ES256" => JwtAlgorithm::ES256,
            "HS384" | "HS512" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES384"
            | "EdDSA" => {
                return Err(AuthError::AlgorithmNotAllowed(
                    name.to_owned(),
                    self.allowed(),
                ))
            }
            other => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
        };
        if !self.algorithms.contains(&algorithm) {
            return Err(AuthError::AlgorithmNotAllowed(
                name.to_owned(),
                self.allowed(),
            ));
        }
        Ok(algorithm)
    }
}
