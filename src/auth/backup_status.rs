//! How many backup codes a user has left, for the pages' warnings.

use super::Auth;
use crate::domain::UserId;
use crate::store::StoreError;

impl Auth {
    /// `(remaining, total)` backup codes of `user`.
    pub async fn backup_code_status(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        self.store.backup_code_counts(user).await
    }
}
