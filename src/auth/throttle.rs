//! Rate limits and back-off, kept in the database so every node counts the
//! same failures and a restart forgets nothing (docs/security/brute-force.md).
//!
//! Keys name what is counted: `ip:<route>:<addr>` for per-address rates,
//! `pw:acct_ip:<email>:<addr>` and `pw:acct:<email>` for password failures
//! (keyed by the case-folded email, so unknown and known accounts behave
//! alike), `pw:consec:<email>` for the hard stop, and `mfa:*` likewise for
//! second factors. A limiter-store failure refuses the request (fail closed).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::Ipv6Net;

use serde_json::json;
use time::OffsetDateTime;

use super::Auth;
use crate::audit::{EventKind, RequestMeta};
use crate::config::Rate;
use crate::domain::UserId;
use crate::store::StoreError;
use crate::store::limits::{AttemptCounter, Reserved};

/// Long enough that a "consecutive failures" counter never resets by age.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

/// Why a request was throttled.
#[derive(Debug, thiserror::Error)]
pub enum Throttled {
    /// Too many attempts; retry after this many seconds.
    #[error("rate limited")]
    RetryAfter(u64),
    /// The factor hit the hard stop and stays disabled until reset.
    #[error("factor disabled")]
    FactorDisabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One attempt reserved by [`Auth::reserve_attempt`]: the counts it took
/// (streak of the account from this address, hourly count of the account,
/// hard-stop count) and the back-offs it started.
#[derive(Debug, Clone, Copy)]
#[must_use = "a reserved attempt must end as a failure or a success"]
pub struct Attempt {
    factor: Factor,
    counts: [u64; 3],
    blocks: [Duration; 2],
}

/// Which per-address rate a route counts against.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    Registration,
    Login,
    ResetRequest,
    VerificationRequest,
    Mfa,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Registration => "registration",
            Bucket::Login => "login",
            Bucket::ResetRequest => "reset",
            Bucket::VerificationRequest => "verification",
            Bucket::Mfa => "mfa",
        }
    }
}

/// A factor whose failures are counted per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Password,
    SecondFactor,
}

impl Factor {
    fn prefix(self) -> &'static str {
        match self {
            Factor::Password => "pw",
            Factor::SecondFactor => "mfa",
        }
    }
}

/// The key of a client address for the per-address limits: IPv4 as is,
/// IPv6 by its network of `v6_prefix` bits (`2001:db8:1:2::/64`), because
/// one subscriber usually holds a whole /64 (or more) and could otherwise
/// take a fresh address for every attempt.
pub fn limit_key(ip: IpAddr, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => Ipv6Net::new(v6, v6_prefix.min(128))
            .map(|net| net.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
    }
}

fn seconds_until(until: OffsetDateTime, now: OffsetDateTime) -> u64 {
    u64::try_from((until - now).whole_seconds())
        .unwrap_or(0)
        .max(1)
}

impl Auth {
    fn rate_of(&self, bucket: Bucket) -> Rate {
        let l = &self.config.limits;
        match bucket {
            Bucket::Registration => l.registration_per_ip,
            Bucket::Login => l.login_per_ip,
            Bucket::ResetRequest => l.reset_per_ip,
            Bucket::VerificationRequest => l.verification_per_ip,
            Bucket::Mfa => l.mfa_per_ip,
        }
    }

    async fn throttled_event(
        &self,
        user: Option<UserId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.record_event(EventKind::Throttled, user, meta, detail)
            .await
    }

    /// Counts one attempt from the client's address against `bucket`.
    pub async fn count_attempt(&self, bucket: Bucket, meta: &RequestMeta) -> Result<(), Throttled> {
        let rate = self.rate_of(bucket);
        let now = self.clock.now();
        let key = format!("ip:{}:{}", bucket.name(), self.limit_client_key(meta));
        let (count, started) = self.store.throttle_hit(&key, now, rate.window).await?;
        if count > rate.limit {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => bucket.name()).increment(1);
            let retry = seconds_until(started + rate.window, now);
            if count == rate.limit + 1 {
                self.throttled_event(
                    None,
                    meta,
                    json!({"limit": "per_ip", "bucket": bucket.name(), "retry_after": retry}),
                )
                .await?;
            }
            return Err(Throttled::RetryAfter(retry));
        }
        Ok(())
    }

    /// The client as the limiters count it (see [`limit_key`]).
    pub(crate) fn limit_client_key(&self, meta: &RequestMeta) -> String {
        match meta.ip.parse::<IpAddr>() {
            Ok(ip) => limit_key(ip, self.config.limits.ipv6_prefix),
            Err(_) => meta.ip.clone(),
        }
    }

    fn keys(&self, factor: Factor, account: &str, meta: &RequestMeta) -> [String; 3] {
        let p = factor.prefix();
        [
            format!("{p}:acct_ip:{account}:{}", self.limit_client_key(meta)),
            format!("{p}:acct:{account}"),
            format!("{p}:consec:{account}"),
        ]
    }

    /// Reserves one attempt of `factor` on `account` before any secret is
    /// checked: one atomic step refuses it while the account (or the
    /// account from this address) is backing off or at the hard stop, and
    /// otherwise counts it as a failure in advance and starts the back-off
    /// a failure would start. A success gives it back
    /// ([`Auth::record_success`]); so concurrent attempts, also on other
    /// nodes, never evaluate more than the thresholds allow. During a
    /// back-off the right password is refused like a wrong one.
    pub async fn reserve_attempt(
        &self,
        factor: Factor,
        account: &str,
        meta: &RequestMeta,
    ) -> Result<Attempt, Throttled> {
        let limits = self.config.limits;
        let [acct_ip, acct, consec] = self.keys(factor, account, meta);
        let counters = [
            AttemptCounter {
                key: acct_ip,
                window: FOREVER,
                backoff_after: Some(limits.backoff_after),
                stop_at: None,
            },
            AttemptCounter {
                key: acct,
                window: HOUR,
                backoff_after: Some(limits.account_failures_per_hour),
                stop_at: None,
            },
            AttemptCounter {
                key: consec,
                window: FOREVER,
                backoff_after: None,
                stop_at: Some(limits.factor_hard_stop),
            },
        ];
        let now = self.clock.now();
        match self
            .store
            .reserve_attempt(&counters, limits.backoff_max, now)
            .await?
        {
            Reserved::Granted { counts, blocks } => Ok(Attempt {
                factor,
                counts: [0, 1, 2].map(|i| counts.get(i).copied().unwrap_or(0)),
                blocks: [0, 1].map(|i| blocks.get(i).copied().unwrap_or_default()),
            }),
            Reserved::Blocked(until) => {
                metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "backoff").increment(1);
                Err(Throttled::RetryAfter(seconds_until(until, now)))
            }
            Reserved::Stopped => {
                metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "hard_stop")
                    .increment(1);
                Err(Throttled::FactorDisabled)
            }
        }
    }

    /// The reserved attempt failed: it stays counted; writes the
    /// `throttled` events for the thresholds it crossed.
    pub async fn attempt_failed(
        &self,
        attempt: &Attempt,
        user: Option<UserId>,
        meta: &RequestMeta,
    ) -> Result<(), Throttled> {
        let p = attempt.factor.prefix();
        let [streak, hourly, total] = attempt.counts;
        let [streak_block, hourly_block] = attempt.blocks;
        if !streak_block.is_zero() {
            self.throttled_event(user, meta, json!({"limit": "account_and_ip", "factor": p, "failures": streak, "retry_after": streak_block.as_secs()}))
                .await?;
        }
        if !hourly_block.is_zero() {
            self.throttled_event(user, meta, json!({"limit": "account", "factor": p, "failures": hourly, "retry_after": hourly_block.as_secs()}))
                .await?;
        }
        if total == self.config.limits.factor_hard_stop {
            self.throttled_event(
                user,
                meta,
                json!({"limit": "hard_stop", "factor": p, "failures": total}),
            )
            .await?;
        }
        Ok(())
    }

    /// A success clears the counters of the factor used (only those).
    pub async fn record_success(
        &self,
        factor: Factor,
        account: &str,
        meta: &RequestMeta,
    ) -> Result<(), StoreError> {
        let keys = self.keys(factor, account, meta);
        // Every address's streak for this account ends too.
        self.store.throttle_clear(&keys).await
    }

    /// Deletes fixed-window counters whose window has ended and that block
    /// nothing: `throttle_hit` would start such a counter afresh anyway, so
    /// this changes no decision, it only stops keeping addresses and
    /// account names longer than they matter. Back-off streaks and the
    /// hard-stop counters of accounts never expire by age; those of emails
    /// no account has go once idle for `login_backoff_max`. Returns how
    /// many rows went.
    pub async fn purge_ended_windows(&self) -> Result<u64, StoreError> {
        let l = &self.config.limits;
        let now = self.clock.now();
        let mut classes: Vec<(String, Duration)> = [
            Bucket::Registration,
            Bucket::Login,
            Bucket::ResetRequest,
            Bucket::VerificationRequest,
            Bucket::Mfa,
        ]
        .into_iter()
        .map(|b| (format!("ip:{}:", b.name()), self.rate_of(b).window))
        .collect();
        for factor in [Factor::Password, Factor::SecondFactor] {
            classes.push((format!("{}:acct:", factor.prefix()), HOUR));
        }
        classes.push(("mail:reset:".into(), l.reset_mails_per_account.window));
        classes.push((
            "mail:verify:".into(),
            l.verification_mails_per_account.window,
        ));
        let mut purged = 0;
        for (prefix, window) in classes {
            purged += self
                .store
                .purge_throttles(&prefix, now - window, now)
                .await?;
        }
        // Streaks and hard-stop counts of emails that are nobody's protect
        // nothing; once idle for the longest back-off they go, so failed
        // logins for made-up emails cannot grow the table without bound.
        let unowned: Vec<String> = [Factor::Password, Factor::SecondFactor]
            .into_iter()
            .flat_map(|f| {
                let p = f.prefix();
                [format!("{p}:acct_ip:"), format!("{p}:consec:")]
            })
            .collect();
        purged += self
            .store
            .purge_unowned_throttles(&unowned, now - l.backoff_max)
            .await?;
        Ok(purged)
    }

    /// Re-enables a factor after the hard stop (password reset, admin).
    pub async fn clear_factor(&self, factor: Factor, account: &str) -> Result<(), StoreError> {
        let p = factor.prefix();
        self.store
            .throttle_clear(&[
                format!("{p}:acct:{account}"),
                format!("{p}:consec:{account}"),
            ])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a, 64), "2001:db8:1:2::/64");
        assert_eq!(limit_key(a, 64), limit_key(b, 64));
        assert_ne!(limit_key(a, 64), limit_key(other, 64));
        assert_eq!(limit_key(a, 48), limit_key(other, 48));
        assert_eq!(limit_key(a, 128), "2001:db8:1:2:aaaa::1/128");
        assert_eq!(limit_key("192.0.2.1".parse().unwrap(), 64), "192.0.2.1");
    }

    proptest! {
        // Two addresses share a key exactly when they share the prefix.
        #[test]
        fn ipv6_key_is_the_prefix(a in any::<u128>(), b in any::<u128>(), len in 0u8..=128) {
            let (x, y) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let same = (a & mask) == (b & mask);
            prop_assert_eq!(limit_key(IpAddr::V6(x), len) == limit_key(IpAddr::V6(y), len), same);
            // Canonical: the key parses back as the network it names.
            let net: Ipv6Net = limit_key(IpAddr::V6(x), len).parse().unwrap();
            prop_assert!(net.contains(&x));
            prop_assert_eq!(net.prefix_len(), len);
        }
    }
}
