//! Times Argon2id password hashing with castellan's own hasher and the
//! default cost (19 MiB, 2 iterations, 1 lane): N sequential hashes on one
//! thread, then N hashes on each of one thread per CPU at once.
//!
//! Run with `cargo run --release --example hash_cost [N]` (default N = 30).
//! Prints `hash_median_ms=<ms>` (plus min/max) and `hash_parallel_per_s=<rate>`
//! on lines that bench/run.sh parses.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use castellan::auth::Hasher;
use castellan::config::{Argon2Config, HashingConfig};
use castellan::domain::{Password, PasswordPolicy};

/// castellan's hashing pool with the default Argon2id cost.
fn start(threads: usize) -> anyhow::Result<Hasher> {
    let config = HashingConfig {
        argon2: Argon2Config {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        },
        threads,
        queue: 4 * threads,
        low_priority: false,
    };
    // The backup-code pepper plays no part in password hashing.
    Hasher::start(&config, zeroize::Zeroizing::new([0u8; 32]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 30,
    };
    anyhow::ensure!(n > 0, "N must be at least 1");
    let hasher = start(1)?;
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
        let t0 = Instant::now();
        hasher.hash(&password).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
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

    // The same work on one thread per CPU at once: what the machine really
    // delivers when every hashing thread is busy (shared caches, memory
    // bandwidth and SMT siblings make it less than CPUs / median).
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let pool = start(cpus)?;
    pool.hash(&password).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cpus);
    for _ in 0..cpus {
        let (pool, password) = (pool.clone(), password.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                pool.hash(&password).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let per_second = (cpus * n) as f64 / started.elapsed().as_secs_f64();
    println!(
        "hash_parallel_per_s={per_second:.1} threads={cpus} n={}",
        cpus * n
    );
    Ok(())
}
