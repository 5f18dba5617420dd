//! The MongoDB backend of `database-plugin`: the official `mongodb` driver.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, Credential, Tls, TlsOptions};

use super::config::DatabaseConfig;
use super::service::DatabaseError;

/// Builds the client the config describes and checks it with a `ping`, so that a wrong
/// address or a bad option fails at initialization, naming the server.
pub(super) async fn connect(
    config: &DatabaseConfig,
    server: &str,
) -> Result<mongodb::Database, DatabaseError> {
    let fail = |message: String| DatabaseError::Connect {
        server: server.to_owned(),
        message,
    };
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let uri = connection_uri(config);
    let mut options = ClientOptions::parse(uri.as_str())
        .await
        .map_err(|e| fail(format!("invalid MongoDB options: {}", e.kind)))?;
    if config.connection_string.is_none() {
        if let Some(username) = &config.username {
            options.credential = Some(
                Credential::builder()
                    .username(username.clone())
                    .password(config.password.as_ref().map(|p| p.expose().to_owned()))
                    .build(),
            );
        }
    }
    if config.ssl {
        options.tls = Some(Tls::Enabled(TlsOptions::default()));
    }
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.min_pool_size = Some(config.pool.min);
    options.max_pool_size = Some(config.pool.max);
    if options.app_name.is_none() {
        options.app_name = Some("ixp".into());
    }
    let name = config
        .database
        .clone()
        .or_else(|| options.default_database.clone())
        .unwrap_or_else(|| config.effective_database().to_owned());
    let client = mongodb::Client::with_options(options)
        .map_err(|e| fail(format!("invalid MongoDB options: {}", e.kind)))?;
    let database = client.database(&name);
    if let Err(message) = ping(&database).await {
        client.shutdown().await;
        return Err(fail(message));
    }
    Ok(database)
}

/// One `ping` round trip.
pub(super) async fn ping(database: &mongodb::Database) -> Result<(), String> {
    database
        .run_command(doc! { "ping": 1 })
        .await
        .map(drop)
        .map_err(|e| e.kind.to_string())
}

/// The connection string: the configured one, or one built from host and port; then
/// the `options` as URI options. User name and password are never put in it (they go
/// into the credential), so it holds no secret of ours.
fn connection_uri(config: &DatabaseConfig) -> String {
    let mut uri = match &config.connection_string {
        Some(url) => url.expose().to_owned(),
        None => format!("mongodb://{}:{}/", config.host, config.effective_port()),
    };
    for (key, value) in &config.options {
        let separator = if uri.contains('?') {
            '&'
        } else if uri[uri.find("://").map_or(0, |i| i + 3)..].contains('/') {
            '?'
        } else {
            uri.push('/');
            '?'
        };
        uri.push(separator);
        uri.push_str(key);
        uri.push('=');
        uri.push_str(&percent_encode(&value.to_string()));
    }
    uri
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::config::{DatabaseType, OptionValue};

    #[test]
    fn options_become_uri_options() {
        let mut config = DatabaseConfig {
            kind: DatabaseType::Mongodb,
            ..DatabaseConfig::default()
        };
        config
            .options
            .insert("appName".into(), OptionValue::Text("my app".into()));
        config
            .options
            .insert("directConnection".into(), OptionValue::Bool(true));
        assert_eq!(
            connection_uri(&config),
            "mongodb://127.0.0.1:27017/?appName=my%20app&directConnection=true"
        );
        config.connection_string = Some(ixp_core::Secret::new("mongodb://db.example:1/app?w=1"));
        assert_eq!(
            connection_uri(&config),
            "mongodb://db.example:1/app?w=1&appName=my%20app&directConnection=true"
        );
        config.connection_string = Some(ixp_core::Secret::new("mongodb://db.example:1"));
        assert_eq!(
            connection_uri(&config),
            "mongodb://db.example:1/?appName=my%20app&directConnection=true"
        );
    }
}
