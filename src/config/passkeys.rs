//! Passkey (WebAuthn) settings: the relying-party id, the origins whose
//! ceremonies are accepted, and how long a ceremony may take.

use std::time::Duration;

use webauthn_rs::prelude::Url;

use super::load::Parser;
use super::parse::parse_duration_in;
use super::{Config, Profile};

/// Resolved passkey settings.
#[derive(Debug, Clone)]
pub struct PasskeyConfig {
    /// The relying-party id (a domain); `None` when passkeys are off
    /// because neither it nor `public_base_url` names a domain.
    pub rp_id: Option<String>,
    /// Origins whose `clientDataJSON.origin` is accepted.
    pub origins: Vec<Url>,
    /// How long a started ceremony (its challenge) stays valid.
    pub challenge_ttl: Duration,
}

impl PasskeyConfig {
    /// Passkeys are on when a relying-party id and an origin are known.
    pub fn enabled(&self) -> bool {
        self.rp_id.is_some() && !self.origins.is_empty()
    }
}

/// Whether `host` may serve as a relying-party id: a domain name, not an
/// IP address (browsers refuse those).
fn is_domain(host: &str) -> bool {
    !host.is_empty()
        && host.parse::<std::net::IpAddr>().is_err()
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !host.starts_with('.')
        && !host.ends_with('.')
}

fn parse_origin(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|_| format!("`{v}` is not an origin"))?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() || !bare {
        return Err(format!(
            "`{v}` must be an origin like https://auth.example.com (scheme, host, optional port)"
        ));
    }
    Ok(url)
}

/// Reads the passkey settings; the defaults come from `public_base_url`.
pub(super) fn parse(p: &mut Parser<'_>, public_base_url: Option<&str>) -> Option<PasskeyConfig> {
    let rp_id = p.parse("passkey_rp_id", |v| {
        if v.is_empty() {
            Ok(None)
        } else if is_domain(v) {
            Ok(Some(v.to_string()))
        } else {
            Err("must be a lowercase domain name such as example.com (no scheme, port or IP address)".into())
        }
    });
    let origins = p.parse("passkey_origins", |v| {
        v.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(parse_origin)
            .collect::<Result<Vec<_>, _>>()
    });
    let challenge_ttl = p.parse("passkey_challenge_ttl", |v| {
        parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(600))
    });
    let base = public_base_url.and_then(|b| parse_origin(b).ok());
    let mut origins = origins?;
    if origins.is_empty() {
        origins.extend(base.clone());
    }
    let rp_id = rp_id?.or_else(|| {
        base.as_ref()
            .and_then(|b| b.host_str())
            .filter(|h| is_domain(h))
            .map(str::to_string)
    });
    Some(PasskeyConfig {
        rp_id,
        origins,
        challenge_ttl: challenge_ttl?,
    })
}

/// The rules between the passkey settings, and production's https rule.
pub(super) fn check(config: &Config, fail: &mut impl FnMut(&str, &str)) {
    let pk = &config.passkeys;
    let Some(rp_id) = &pk.rp_id else {
        return;
    };
    for origin in &pk.origins {
        let host = origin.host_str().unwrap_or_default();
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            fail(
                "passkey_origins",
                &format!(
                    "{origin} is not on the relying-party id {rp_id} (its host must be {rp_id} or a subdomain of it)"
                ),
            );
        }
        if config.profile == Profile::Production && origin.scheme() != "https" {
            fail(
                "passkey_origins",
                &format!("{origin} must use https:// in production"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::Config;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::load(None, &env)
    }

    #[test]
    fn defaults_follow_public_base_url_and_an_ip_turns_passkeys_off() {
        let c = load(&[]).unwrap();
        assert_eq!(c.passkeys.rp_id, None, "127.0.0.1 cannot be an RP id");
        assert_eq!(c.passkeys.challenge_ttl.as_secs(), 300);
        let c = load(&[("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com")]).unwrap();
        assert_eq!(c.passkeys.rp_id.as_deref(), Some("auth.example.com"));
        assert_eq!(c.passkeys.origins[0].as_str(), "https://auth.example.com/");
    }

    #[test]
    fn origins_must_sit_on_the_rp_id_and_use_https_in_production() {
        let err = load(&[
            ("CASTELLAN_PASSKEY_RP_ID", "example.com"),
            ("CASTELLAN_PASSKEY_ORIGINS", "https://example.org"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("passkey_origins"), "{err}");
        let err = load(&[
            ("CASTELLAN_PROFILE", "production"),
            (
                "CASTELLAN_SECRET_KEY",
                "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=",
            ),
            ("CASTELLAN_BEHIND_TLS_PROXY", "true"),
            ("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com"),
            ("CASTELLAN_PASSKEY_ORIGINS", "http://auth.example.com"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        for bad in [
            "https://Example.com",
            "127.0.0.1",
            "example.com:443",
            ".example.com",
        ] {
            assert!(load(&[("CASTELLAN_PASSKEY_RP_ID", bad)]).is_err(), "{bad}");
        }
        assert!(load(&[("CASTELLAN_PASSKEY_ORIGINS", "https://a.example.com/path")]).is_err());
        assert!(load(&[("CASTELLAN_PASSKEY_CHALLENGE_TTL", "11m")]).is_err());
    }
}
