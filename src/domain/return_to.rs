//! Where a person may be sent after signing in: a path on the same origin
//! or an absolute URL on an allow-listed origin. Everything else is refused
//! (the caller falls back to a fixed page), so no redirect ever leaves the
//! allow-list. The value is decoded once by the form or query parser and
//! never again, so encoded tricks (`%2F%2Fevil`) stay harmless text.

/// Longest accepted `return_to`.
pub const MAX_LEN: usize = 2048;

/// Normalises an origin like `https://app.example.com:8443` (scheme, host,
/// optional port; no path, user info or trailing slash) to lower case.
pub fn parse_origin(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    let ok = !rest.is_empty()
        && rest.len() <= 253
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && !rest.starts_with(':')
        && match rest.rsplit_once(':') {
            None => true,
            // An IPv6 literal without a port.
            Some((_, port)) if port.ends_with(']') => true,
            Some((_, port)) => port.parse::<u16>().is_ok(),
        };
    ok.then_some(lower)
}

/// A checked place to return to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// Accepts `/path...` (not `//` or `/\`) or an absolute `http(s)` URL
    /// whose origin is one of `allowed` (already normalised by
    /// [`parse_origin`]). No whitespace, control characters or backslashes
    /// anywhere, no user info.
    pub fn parse(raw: &str, allowed: &[String]) -> Option<Self> {
        if raw.is_empty()
            || raw.len() > MAX_LEN
            || raw
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || !c.is_ascii())
        {
            return None;
        }
        if let Some(rest) = raw.strip_prefix('/') {
            return (!rest.starts_with('/')).then(|| Self(raw.to_string()));
        }
        let lower = raw.to_ascii_lowercase();
        let scheme_len = if lower.starts_with("https://") {
            8
        } else if lower.starts_with("http://") {
            7
        } else {
            return None;
        };
        let end = raw[scheme_len..]
            .find(['/', '?', '#'])
            .map_or(raw.len(), |i| i + scheme_len);
        let authority = &raw[scheme_len..end];
        if authority.contains('@') {
            return None;
        }
        let origin = parse_origin(&raw[..end])?;
        allowed.contains(&origin).then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![
            "http://127.0.0.1:8080".to_string(),
            "https://app.example.com".to_string(),
        ]
    }

    // covers: ASVS-3.7.2
    #[test]
    fn hostile_return_to_values_are_refused() {
        for bad in [
            "https://evil.test",
            "https://evil.test/ui/account",
            "//evil.test",
            "///evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "https:evil.test",
            "https:/evil.test",
            "http:\\\\evil.test",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "%2F%2Fevil.test",
            "%2f%2fevil.test",
            "https%3A%2F%2Fevil.test",
            "https://app.example.com@evil.test/",
            "https://app.example.com.evil.test/",
            "https://evil.test#https://app.example.com",
            "https://evil.test?https://app.example.com",
            "https://app.example.com:444/",
            "ftp://app.example.com/",
            "/\tevil",
            " /ui",
            "/ui\r\nSet-Cookie: x=1",
            "",
            "evil.test",
        ] {
            assert_eq!(ReturnTo::parse(bad, &allowed()), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_and_allowed_origins_are_kept() {
        for good in [
            "/ui/account",
            "/",
            "/%2F/x",
            "https://app.example.com",
            "https://app.example.com/a?b=c#d",
            "HTTPS://APP.example.com/x",
            "http://127.0.0.1:8080/ui/account",
        ] {
            assert_eq!(
                ReturnTo::parse(good, &allowed()).map(|r| r.0),
                Some(good.to_string()),
                "{good:?}"
            );
        }
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:8443").as_deref(),
            Some("https://app.example.com:8443")
        );
        for bad in [
            "https://a.example/",
            "https://a.example/x",
            "https://u@a.example",
            "a.example",
            "https://",
            "https://a.example:99999",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad:?}");
        }
    }
}
