//! Rate limits and back-off, kept in the database so every node counts the
//! same failures and a restart forgets nothing (docs/security/brute-force.md).
//!
//! Keys name what is counted: `ip:<route>:<addr>` for per-address rates,
//! `pw:acct_ip:<email>:<addr>` and `pw:acct:<email>` for password failures
//! (keyed by the case-folded email, so unknown and known accounts behave
//! alike), `pw:consec:<email>` for the hard stop, and `mfa:*` likewise for
//! second factors. A limiter-store failure refuses the request (fail closed).

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::Auth;
use crate::audit::{EventKind, RequestMeta};
use crate::config::Rate;
use crate::domain::UserId;
use crate::store::StoreError;

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
        let key = format!("ip:{}:{}", bucket.name(), meta.ip);
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

    fn keys(&self, factor: Factor, account: &str, meta: &RequestMeta) -> [String; 3] {
        let p = factor.prefix();
        [
            format!("{p}:acct_ip:{account}:{}", meta.ip),
            format!("{p}:acct:{account}"),
            format!("{p}:consec:{account}"),
        ]
    }

    /// Refuses an attempt on `account` while it is backing off, or when
    /// the factor reached the hard stop. Runs before any secret is checked,
    /// so during back-off the right password is refused like a wrong one.
    pub async fn check_backoff(
        &self,
        factor: Factor,
        account: &str,
        meta: &RequestMeta,
    ) -> Result<(), Throttled> {
        let [acct_ip, acct, consec] = self.keys(factor, account, meta);
        if self.store.throttle_count(&consec).await? >= self.config.limits.factor_hard_stop {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "hard_stop").increment(1);
            return Err(Throttled::FactorDisabled);
        }
        let now = self.clock.now();
        if let Some(until) = self
            .store
            .throttle_blocked_until(&[acct_ip, acct], now)
            .await?
        {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "backoff").increment(1);
            return Err(Throttled::RetryAfter(seconds_until(until, now)));
        }
        Ok(())
    }

    /// Counts a failure of `factor` for `account` and starts back-off when
    /// a threshold is crossed.
    pub async fn record_failure(
        &self,
        factor: Factor,
        account: &str,
        user: Option<UserId>,
        meta: &RequestMeta,
    ) -> Result<(), Throttled> {
        let limits = self.config.limits;
        let [acct_ip, acct, consec] = self.keys(factor, account, meta);
        let now = self.clock.now();
        let (streak, _) = self.store.throttle_hit(&acct_ip, now, FOREVER).await?;
        let (hourly, _) = self.store.throttle_hit(&acct, now, HOUR).await?;
        let (total, _) = self.store.throttle_hit(&consec, now, FOREVER).await?;
        let backoff = |over: u64| {
            // 1 s, 2 s, 4 s, ... capped.
            let secs = 1u64
                .checked_shl(u32::try_from(over).unwrap_or(63))
                .unwrap_or(u64::MAX);
            Duration::from_secs(secs).min(limits.backoff_max)
        };
        if streak >= limits.backoff_after {
            let wait = backoff(streak - limits.backoff_after);
            self.store.throttle_block(&acct_ip, now + wait, now).await?;
            self.throttled_event(user, meta, json!({"limit": "account_and_ip", "factor": factor.prefix(), "failures": streak, "retry_after": wait.as_secs()}))
                .await?;
        }
        if hourly >= limits.account_failures_per_hour {
            let wait = backoff(hourly - limits.account_failures_per_hour);
            self.store.throttle_block(&acct, now + wait, now).await?;
            self.throttled_event(user, meta, json!({"limit": "account", "factor": factor.prefix(), "failures": hourly, "retry_after": wait.as_secs()}))
                .await?;
        }
        if total == limits.factor_hard_stop {
            self.throttled_event(
                user,
                meta,
                json!({"limit": "hard_stop", "factor": factor.prefix(), "failures": total}),
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
    /// hard-stop counters never expire by age and are kept. Returns how
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
