//! Checks of the database: TLS, trusted CA, credentials, reachability,
//! the role, the pool, the schema and the audit chain.

use super::{DatabaseFindings, Grader, Status};
use crate::config::{Config, DatabaseLocation};

/// Grades the database connection and what the live look found.
pub(super) fn grade(config: &Config, db: &DatabaseFindings, g: &mut Grader) {
    match &config.database.location {
        DatabaseLocation::Sqlite { .. } => g.add(
            "database_tls",
            3,
            Status::Pass,
            "embedded SQLite: no network connection to protect".into(),
            "credentials and data cross the network to PostgreSQL",
            "",
        ),
        DatabaseLocation::Postgres { url } => {
            let text = secrecy::ExposeSecret::expose_secret(url);
            let mode = url_param(text, "sslmode").unwrap_or("verify-full");
            let host = url_host(text);
            let local = host.as_deref().is_none_or(crate::config::is_loopback_host);
            let status = match mode {
                "verify-full" => Status::Pass,
                "verify-ca" => Status::Warn,
                _ if local => Status::Pass,
                _ => Status::Fail,
            };
            g.add(
                "database_tls",
                3,
                status,
                format!(
                    "PostgreSQL sslmode {mode} to {}",
                    host.as_deref().unwrap_or("a Unix socket")
                ),
                "only verify-full proves the server is the database you meant; require encrypts but accepts any certificate",
                "add sslmode=verify-full&sslrootcert=/path/to/ca.pem to CASTELLAN_DATABASE_URL",
            );
            let ca = url_param(text, "sslrootcert");
            g.add(
                "database_ca",
                1,
                if ca.is_some() || local {
                    Status::Pass
                } else {
                    Status::Warn
                },
                match ca {
                    Some(path) => format!("only the CA in {path} is trusted for PostgreSQL"),
                    None if local => "loopback database".into(),
                    None => "the public web PKI roots are trusted for PostgreSQL".into(),
                },
                "with a private CA, any publicly trusted certificate for the host name would otherwise be accepted",
                "set sslrootcert=/path/to/private-ca.pem in CASTELLAN_DATABASE_URL (castellan then trusts only it)",
            );
            let (user, _) = crate::config::database_url_credentials(text);
            let default = crate::config::has_well_known_credentials(text);
            g.add(
                "database_credentials",
                2,
                if default { Status::Fail } else { Status::Pass },
                if default {
                    format!("the database user `{user}` has a well-known or trivial password")
                } else {
                    "the database credentials are not a well-known default".into()
                },
                "default credentials are the first thing an attacker tries",
                "give the castellan role a random password (openssl rand -base64 24) and update CASTELLAN_DATABASE_URL_FILE",
            );
        }
    }
    let postgres = matches!(config.database.location, DatabaseLocation::Postgres { .. });
    if let Some(why) = &db.unreachable {
        g.add(
            "database_reachable",
            3,
            Status::Fail,
            format!("cannot connect: {why}"),
            "castellan answers 503 to everything that needs the database",
            "check CASTELLAN_DATABASE_URL, the network and the server",
        );
    } else {
        if postgres {
            if let Some(tls) = db.tls_in_use {
                g.add(
                    "database_tls_in_use",
                    2,
                    if tls { Status::Pass } else { g.weak },
                    format!(
                        "the server reports this connection {}",
                        if tls { "encrypted" } else { "unencrypted" }
                    ),
                    "pg_stat_ssl tells what the server actually negotiated",
                    "enable ssl on the server and use sslmode=verify-full",
                );
            }
            if let Some(usable) = db.usable_connections {
                let pool = config.database.pool.size();
                g.add(
                    "database_pool_fits",
                    2,
                    if pool <= usable {
                        Status::Pass
                    } else {
                        Status::Fail
                    },
                    format!("pool of {pool} connections; the server allows {usable}"),
                    "a pool larger than the server allows fails under load instead of queueing",
                    "lower CASTELLAN_DB_MAX_CONNECTIONS (nodes x pool size <= max_connections - superuser_reserved_connections)",
                );
            }
            if let (Some(superuser), Some(owner)) = (db.role_is_superuser, db.role_owns_tables) {
                g.add(
                    "database_role",
                    2,
                    if superuser || owner {
                        Status::Fail
                    } else {
                        Status::Pass
                    },
                    if superuser {
                        "castellan's database role is a superuser".into()
                    } else if owner {
                        "castellan's database role owns its tables (it could alter or drop them)"
                            .into()
                    } else {
                        "castellan's database role holds data privileges only".into()
                    },
                    "a compromised service should not be able to change the schema, read other databases or delete the audit trail wholesale",
                    "run migrations with an owner role (castellan migrate) and serve with a role granted SELECT, INSERT, UPDATE, DELETE only (docs/operations.md)",
                );
            }
            if let Some(method) = &db.password_encryption {
                g.add(
                    "database_password_encryption",
                    1,
                    if method == "scram-sha-256" {
                        Status::Pass
                    } else {
                        Status::Fail
                    },
                    format!("password_encryption is {method}"),
                    "MD5 password authentication is broken; SCRAM-SHA-256 is the approved method",
                    "set password_encryption = scram-sha-256 on the server, reset the role's password, use scram-sha-256 in pg_hba.conf",
                );
            }
        }
        g.add(
            "migrations",
            2,
            if db.pending_migrations.is_empty() {
                Status::Pass
            } else {
                Status::Fail
            },
            if db.pending_migrations.is_empty() {
                "the database schema is current".into()
            } else {
                format!("pending migrations: {}", db.pending_migrations.join(", "))
            },
            "a schema behind the binary breaks requests at run time",
            "run castellan migrate (with the owner role)",
        );
        match &db.audit_chain {
            Some(Ok(events)) => g.add(
                "audit_chain",
                3,
                Status::Pass,
                format!("the audit chain verifies ({events} events)"),
                "a broken chain means security events were altered, removed or inserted",
                "",
            ),
            Some(Err(broken)) => g.add(
                "audit_chain",
                3,
                Status::Fail,
                format!("the audit chain is broken: {broken}"),
                "a broken chain means security events were altered, removed or inserted",
                "investigate with castellan audit verify and audit export; compare with shipped exports (docs/operations.md)",
            ),
            None => g.add(
                "audit_chain",
                3,
                Status::Warn,
                "the audit chain was not checked (the schema is not current)".into(),
                "a broken chain means security events were altered, removed or inserted",
                "run castellan migrate, then castellan doctor again",
            ),
        }
    }
}

/// A query parameter of a URL, undecoded (sslmode values need no decoding;
/// paths are shown as written).
fn url_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The host of a `postgres://` URL, `None` for a Unix socket.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        host_port.split(':').next()?.to_string()
    };
    if host.is_empty()
        || url_param(url, "host").is_some_and(|h| h.starts_with('/') || h.starts_with("%2F"))
    {
        None
    } else {
        Some(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_without_a_full_parser() {
        let url = "postgres://app:s%40cret@db.example.com:5432/castellan?sslmode=require&sslrootcert=/ca.pem";
        assert_eq!(url_param(url, "sslmode"), Some("require"));
        assert_eq!(url_param(url, "sslrootcert"), Some("/ca.pem"));
        assert_eq!(url_host(url).as_deref(), Some("db.example.com"));
        assert_eq!(
            crate::config::database_url_credentials(url),
            ("app".into(), "s@cret".into())
        );
        assert!(crate::config::has_well_known_credentials(
            "postgres://postgres:postgres@db/x"
        ));
        assert!(crate::config::has_well_known_credentials(
            "postgres://app:app@db/x"
        ));
        assert!(!crate::config::has_well_known_credentials(url));
        assert_eq!(
            url_host("postgres://u@[::1]:5432/x").as_deref(),
            Some("::1")
        );
        assert_eq!(url_host("postgres:///castellan?host=/run/postgresql"), None);
    }
}
