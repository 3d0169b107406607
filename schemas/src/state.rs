//! [`AccountState`]: where an account stands, and the moves the state
//! machine allows. Both screenings and accounts name it.

use serde::{Deserialize, Serialize};

/// Where an account stands (`SCREENING.md`, Account states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountState {
    /// Withdrawals allowed.
    Normal,
    /// L1 screening fired: withdrawals blocked pending analysis.
    RestrictedWithdrawal,
    /// L2 found risk: withdrawals blocked, watched.
    UnderSurveillance,
    /// Final.
    Banned,
}

impl AccountState {
    /// Every state.
    pub const ALL: [AccountState; 4] = [
        AccountState::Normal,
        AccountState::RestrictedWithdrawal,
        AccountState::UnderSurveillance,
        AccountState::Banned,
    ];

    /// The state's name as on the wire (`RESTRICTED_WITHDRAWAL`).
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Normal => "NORMAL",
            AccountState::RestrictedWithdrawal => "RESTRICTED_WITHDRAWAL",
            AccountState::UnderSurveillance => "UNDER_SURVEILLANCE",
            AccountState::Banned => "BANNED",
        }
    }

    /// Whether the state machine allows the move `self -> to`.
    pub fn can_move_to(self, to: AccountState) -> bool {
        use AccountState::*;
        matches!(
            (self, to),
            (Normal, RestrictedWithdrawal)
                | (RestrictedWithdrawal, UnderSurveillance | Normal)
                | (UnderSurveillance, Banned | Normal)
        )
    }

    /// Withdrawals are allowed only in `NORMAL`.
    pub fn allows_withdrawal(self) -> bool {
        self == AccountState::Normal
    }
}

impl std::fmt::Display for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
