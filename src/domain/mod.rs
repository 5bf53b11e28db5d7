//! Types with invariants and no I/O. Input is parsed into these at the HTTP
//! boundary; the rest of castellan never sees raw strings.

pub mod audit_chain;
pub mod backup_code;
pub mod email;
pub mod password;
pub mod password_blocklist;
pub mod return_to;
pub mod session;
pub mod session_token;
pub mod totp;
pub mod user;

pub use backup_code::BackupCode;
pub use email::Email;
pub use password::{Password, PasswordPolicy};
pub use session::{Aal, Session};
pub use session_token::SessionToken;
pub use totp::{TotpCode, TotpSecret};
pub use user::{User, UserId};
