//! The fixed set of storage operations: the `op` label of the
//! query-duration metric, one per store method, named alike on both
//! backends.

/// Declares [`Op`]: each variant with its label, and the list of all.
macro_rules! ops {
    ($($variant:ident => $name:literal,)+) => {
        /// A storage operation: the `op` label of the query-duration metric.
        /// A fixed set (one per store method, same names on both backends),
        /// so the label stays bounded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $($variant,)+
        }

        impl Op {
            /// Every operation, e.g. for documentation checks.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)+];

            /// The label value, which is the store method's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)+
                }
            }
        }
    };
}

ops! {
    CreateUser => "create_user",
    FindCredentials => "find_credentials",
    FindUser => "find_user",
    GetUser => "get_user",
    SetPasswordHash => "set_password_hash",
    SetLocked => "set_locked",
    RecordLogin => "record_login",
    CreateSession => "create_session",
    FindSession => "find_session",
    TouchSession => "touch_session",
    RotateSession => "rotate_session",
    DeleteSession => "delete_session",
    ListSessions => "list_sessions",
    DeleteUserSessions => "delete_user_sessions",
    DeleteAllSessions => "delete_all_sessions",
    PurgeExpiredSessions => "purge_expired_sessions",
    PutPendingTotp => "put_pending_totp",
    GetTotp => "get_totp",
    ActivateTotp => "activate_totp",
    ResealTotp => "reseal_totp",
    ClaimTotpStep => "claim_totp_step",
    RemoveMfa => "remove_mfa",
    ReplaceBackupCodes => "replace_backup_codes",
    UnusedBackupCode => "unused_backup_code",
    ClaimBackupCode => "claim_backup_code",
    BackupCodeCounts => "backup_code_counts",
    RecordMfaFailure => "record_mfa_failure",
    IssueToken => "issue_token",
    ClaimToken => "claim_token",
    ResetPassword => "reset_password",
    ChangePassword => "change_password",
    MarkEmailVerified => "mark_email_verified",
    ThrottleHit => "throttle_hit",
    ThrottleBlock => "throttle_block",
    ThrottleBlockedUntil => "throttle_blocked_until",
    ThrottleCount => "throttle_count",
    ThrottleClear => "throttle_clear",
    PurgeThrottles => "purge_throttles",
    ReserveAttempt => "reserve_attempt",
    ReserveMfaAttempt => "reserve_mfa_attempt",
    PurgeUnownedThrottles => "purge_unowned_throttles",
    EnforceSessionCap => "enforce_session_cap",
    ResetTokenOwner => "reset_token_owner",
    PurgeAccountTokens => "purge_account_tokens",
    AppendEvent => "append_event",
    ListEvents => "list_events",
    ChainEvents => "chain_events",
    ChainHead => "chain_head",
    PruneEvents => "prune_events",
    CreateCeremony => "create_ceremony",
    TakeCeremony => "take_ceremony",
    PurgeCeremonies => "purge_ceremonies",
    InsertPasskey => "insert_passkey",
    ListPasskeys => "list_passkeys",
    CountPasskeys => "count_passkeys",
    FindPasskey => "find_passkey",
    RecordPasskeyUse => "record_passkey_use",
    FlagPasskey => "flag_passkey",
    RenamePasskey => "rename_passkey",
    DeletePasskey => "delete_passkey",
    RemovePasskeys => "remove_passkeys",
    Ping => "ping",
}
