//! Which settings are secrets, so that nothing prints them: librdkafka
//! properties and object-store options whose names say so.

/// What a secret is printed as.
pub const REDACTED: &str = "<redacted>";

/// Whether the value of the property or option `key` is a secret: its name
/// says password, secret, token, credential or private (key), or it is one
/// of librdkafka's properties that carry key material or a config string
/// with secrets in it.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    const WORDS: [&str; 5] = ["password", "secret", "token", "credential", "private"];
    const KEYS: [&str; 3] = ["ssl.key.pem", "sasl.oauthbearer.config", "sasl.jaas.config"];
    WORDS.iter().any(|w| key.contains(w)) || KEYS.contains(&key.as_str())
}

/// `map` with every secret value replaced by [`REDACTED`].
pub fn redact_map(
    map: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let v = if is_secret(k) {
                REDACTED.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "secret_access_key",
            "aws_secret_access_key",
            "token",
            "session_token",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "sasl.username",
            "access_key_id",
            "endpoint",
            "security.protocol",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
