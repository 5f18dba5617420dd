//! Server addresses as messages, logs, health and `Debug` show them: without the user
//! and password they may carry.

/// `url` without its user and password: `https://user:pw@es:9200` -> `https://es:9200`,
/// `user:pw@host` -> `host`; in a comma-separated list (NATS servers), each one.
pub(crate) fn without_userinfo(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            match (one.find("://"), one.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}{}", &one[..scheme + 3], &one[at + 1..])
                }
                (None, Some(at)) => one[at + 1..].to_owned(),
                _ => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::without_userinfo;

    #[test]
    fn user_and_password_are_left_out_of_one_url_or_a_list() {
        for (url, shown) in [
            ("https://elastic:pw@es:9200", "https://es:9200"),
            ("elastic:pw@es:9200", "es:9200"),
            ("http://es:9200", "http://es:9200"),
            (
                "nats://u:pw@a:4222, nats://b:4222",
                "nats://a:4222,nats://b:4222",
            ),
            ("nats://u:p@w@a:4222", "nats://a:4222"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
        }
    }
}
