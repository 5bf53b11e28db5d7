//! Times Argon2id password hashing with castellan's own hasher and the
//! default cost (19 MiB, 2 iterations, 1 lane) on one thread.
//!
//! Run with `cargo run --release --example hash_cost [N]` (default N = 30).
//! Prints the median as `hash_median_ms=<ms>` (plus min/max) so
//! bench/run.sh can parse it.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use castellan::auth::Hasher;
use castellan::config::Argon2Config;
use castellan::domain::{Password, PasswordPolicy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 30,
    };
    anyhow::ensure!(n > 0, "N must be at least 1");
    let hasher = Hasher::start(
        1,
        4,
        Argon2Config {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        },
        // The backup-code pepper plays no part in password hashing.
        zeroize::Zeroizing::new([0u8; 32]),
    )?;
    let password = Password::new_with_policy(
        "bench-hash-cost-correct-horse-battery",
        &PasswordPolicy {
            min_length: 8,
            max_length: 1024,
            min_strength: 0,
            context_words: Vec::new(),
        },
    )
    .map_err(|e| anyhow::anyhow!("password rejected: {e}"))?;
    // One untimed hash to warm up allocator and caches.
    hasher.hash(&password).await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        hasher.hash(&password).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    println!(
        "hash_median_ms={median:.2} hash_min_ms={:.2} hash_max_ms={:.2} n={n}",
        times[0],
        times[n - 1]
    );
    Ok(())
}
