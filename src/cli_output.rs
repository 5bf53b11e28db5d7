//! The CLI's own output: the only place that prints instead of logging.

/// Prints a fatal error as one line on stderr.
#[allow(clippy::print_stderr)]
pub fn fatal(message: &str) {
    eprintln!("castellan: error: {message}");
}

/// The user agent recorded for actions run from the command line.
pub const USER_AGENT: &str = concat!("castellan-cli/", env!("CARGO_PKG_VERSION"));

/// Standard output, for commands that stream results (`audit export`).
pub fn stdout() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

#[allow(clippy::print_stdout)]
fn line(text: &str) {
    println!("{text}");
}

/// The result of `castellan audit verify` on an intact chain.
pub fn audit_verified(report: &crate::domain::audit_chain::VerifyReport) {
    let range = if report.events == 0 {
        "no events".to_string()
    } else {
        format!(
            "{} events, {} to {}",
            report.events,
            report.checkpoint_seq + 1,
            report.last_seq
        )
    };
    let hmac = match report.authenticated {
        Some(n) => format!("HMAC verified on {n} events"),
        None => "HMAC not checked (no audit_key configured)".to_string(),
    };
    line(&format!(
        "audit chain intact: {range}; checkpoint at event {}; {hmac}",
        report.checkpoint_seq
    ));
}

/// The result of `castellan audit prune`.
pub fn audit_pruned(outcome: Option<&crate::store::PruneOutcome>, retention: &str) {
    match outcome {
        Some(o) => line(&format!(
            "pruned {} events older than {retention}; checkpoint now at event {}",
            o.removed, o.through_seq
        )),
        None => line(&format!("no events older than {retention}")),
    }
}

/// One account, for `castellan admin find-user`.
pub fn admin_user(user: &crate::domain::User) {
    line(&format!(
        "id={} email={} locked={} mfa={}",
        user.id.0,
        user.email.as_str(),
        user.locked,
        user.mfa_enabled
    ));
}

/// Confirmation of an admin action.
pub fn admin_done(text: &str) {
    line(text);
}

/// The report of `castellan doctor`, as text or JSON.
pub fn doctor_report(report: &crate::doctor::Report, json: bool) -> anyhow::Result<()> {
    if json {
        line(&serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    line(&format!(
        "castellan doctor: {}/100 ({} profile)",
        report.score, report.profile
    ));
    for check in &report.checks {
        line(&format!(
            "  {:<4}  {:<28} {}",
            check.status.as_str().to_uppercase(),
            check.id,
            check.summary
        ));
        if check.status != crate::doctor::Status::Pass {
            line(&format!("        why: {}", check.why));
            line(&format!("        fix: {}", check.fix));
        }
    }
    Ok(())
}
